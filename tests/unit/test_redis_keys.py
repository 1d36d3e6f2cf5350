"""The uid-key fast path writes exactly what json.dumps writes, for every type and id."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.model import EntityUid
from verdict.store.base import StoredEntity
from verdict.store.redis_encode import refs_value, staged_fields
from verdict.store.redis_keys import key_uid, uid_key, uncached_uid_key

TYPES = st.from_regex(
    r"[A-Za-z_][A-Za-z0-9_]{0,8}(::[A-Za-z_][A-Za-z0-9_]{0,8}){0,2}", fullmatch=True
)
# Every code point class the escaper distinguishes: controls, quote, backslash, DEL, non-ASCII,
# the line separators JavaScript escapes (json.dumps does not), lone surrogates.
IDS = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0, max_codepoint=0x7F),
        st.sampled_from(["\u2028", "\u2029", "é", "😀", "\ud800", "\udfff", "\x7f"]),
        st.characters(),
    ),
    max_size=20,
)


def reference(uid: EntityUid) -> str:
    return json.dumps([uid.type, uid.id], ensure_ascii=False, separators=(",", ":"))


@settings(max_examples=2_000, deadline=None)
@given(TYPES, IDS)
def test_a_uid_key_is_json_dumps_of_type_and_id(type_: str, id_: str) -> None:
    uid = EntityUid(type_, id_)
    assert uncached_uid_key(uid) == reference(uid)
    assert uid_key(uid) == reference(uid)


def test_ids_that_need_escapes_take_the_encoder() -> None:
    """Each character json.dumps escapes, alone and among others, round-trips."""
    for char in ['"', "\\", "\n", "\t", "\x00", "\x1f", "\b", "\f", "\r"]:
        for id_ in (char, f"a{char}b", char * 3):
            uid = EntityUid("Loan", id_)
            assert uid_key(uid) == reference(uid)
            assert key_uid(uid_key(uid)) == uid
    assert uid_key(EntityUid("Loan", "")) == '["Loan",""]'
    assert uid_key(EntityUid("Loan", "\x7f")) == '["Loan","\x7f"]'  # DEL is not escaped


@settings(max_examples=150, deadline=None)
@given(
    uids=st.lists(st.tuples(TYPES, IDS), min_size=1, max_size=12, unique=True),
    picks=st.lists(st.lists(st.integers(0, 11), max_size=4), min_size=1, max_size=12),
)
def test_staged_fields_with_a_load_wide_memo_write_what_each_entity_names(
    uids: list[tuple[str, str]], picks: list[list[int]]
) -> None:
    """A bulk load's staged fields, made batch after batch with one memo of uid-keys, hold
    for every entity exactly ``uid_key`` of it and ``refs_value`` of its references."""
    everyone = [EntityUid(*uid) for uid in uids]
    batch = [
        StoredEntity.with_text(
            uid,
            {},
            frozenset(everyone[i % len(everyone)] for i in chosen),
            f'{{"n": {n}}}',
        )
        for n, (uid, chosen) in enumerate(zip(everyone, picks, strict=False))
    ]
    memo: dict[EntityUid, str] = {}
    for half in (batch[: len(batch) // 2], batch[len(batch) // 2 :]):
        values, refs = staged_fields(half, memo)
        assert values == {uid_key(e.uid): '{"v":0,"e":' + (e.text or "") + "}" for e in half}
        assert refs == {uid_key(e.uid): refs_value(e.refs) for e in half}
    assert staged_fields(batch) == staged_fields(batch, {})

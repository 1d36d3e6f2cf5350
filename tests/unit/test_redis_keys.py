"""The uid-key fast path writes exactly what json.dumps writes, for every type and id."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from verdict.model import EntityUid
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

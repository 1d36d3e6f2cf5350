"""Turn entities into the scripts' arguments and the staged hashes' values."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from redis.typing import EncodableT, FieldT

from verdict.model import EntityUid
from verdict.store.base import StoredEntity
from verdict.store.redis_keys import StoreKeys, uid_key, uncached_uid_key
from verdict.store.weight import entity_text


def put_args(
    keys: StoreKeys,
    entities: Sequence[StoredEntity],
    require_loaded: bool,
    expected_version: int | None = None,
) -> list[str]:
    """ARGV of the PUT script: the channel, the flag, the expected version ('' for none), then
    (uid-key, entity JSON, refs) per entity."""
    expected = "" if expected_version is None else str(expected_version)
    args = [keys.channel, flag(require_loaded), expected]
    for entity in entities:
        args += [uid_key(entity.uid), _entity_json(entity), _refs(entity)]
    return args


def flag(value: bool) -> str:
    """A script's boolean argument."""
    return "1" if value else "0"


def staged_fields(
    batch: Sequence[StoredEntity], keys: dict[EntityUid, str] | None = None
) -> tuple[dict[FieldT, EncodableT], dict[FieldT, EncodableT]]:
    """The staged entities hash's and the staged refs hash's fields for ``batch`` (each
    entity's uid-key made once for both). ``keys``: uid-keys already made for this load, and
    where to keep the ones made here (a load of 300,000 lending entities asks for 930,000
    keys of 300,000 uids: its references name entities of the file; uid_key's memo, bounded
    for callers' uids, kept few of them)."""
    if keys is None:
        keys = {}
    values: dict[FieldT, EncodableT] = {}
    refs: dict[FieldT, EncodableT] = {}
    for entity in batch:
        uid = entity.uid
        key = keys.get(uid)
        if key is None:
            key = keys[uid] = uncached_uid_key(uid)
        # Version 0: entities of a bulk load; the load's version is the store's at its switch.
        values[key] = '{"v":0,"e":' + _entity_json(entity) + "}"
        found = []
        for ref in entity.refs:
            ref_key = keys.get(ref)
            if ref_key is None:
                ref_key = keys[ref] = uncached_uid_key(ref)
            found.append(ref_key)
        found.sort()
        # refs_value's text, inline: through refs_value with a memo lookup per reference the
        # staged fields cost 0.2 s more per 300,000 (tests/unit/test_redis_keys.py holds the two
        # to one text).
        refs[key] = "\n".join(found)
    return values, refs


def _entity_json(entity: StoredEntity) -> str:
    return entity.text if entity.text is not None else entity_text(entity.json)


def _refs(entity: StoredEntity) -> str:
    return refs_value(entity.refs)


def refs_value(refs: Collection[EntityUid]) -> str:
    """A refs hash field's value: the uid-keys an entity references, sorted, newline-joined."""
    return "\n".join(sorted(uid_key(ref) for ref in refs))

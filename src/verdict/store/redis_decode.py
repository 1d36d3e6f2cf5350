"""Turn the scripts' replies into domain values; unusable data fails the decision closed."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from verdict.cedar_json import check_entity_shape, entity_references
from verdict.errors import EntityDataError, RequestError
from verdict.model import EntityUid, JsonObject
from verdict.store.base import EntitySlice
from verdict.store.redis_encode import refs_value
from verdict.store.redis_keys import key_uid
from verdict.store.weight import Weight, text_weight
from verdict.telemetry import lazy_log, metrics
from verdict.telemetry.log_budget import LogBudget

log = lazy_log.get_logger(__name__)
_LOGS = LogBudget()  # entity_data_corrupt lines per second


class StaleReferences(Exception):
    """Stored reference lists that lack references their entities hold: (uid-key, the stored
    value read, the full list computed from it) per entity, as REPAIR_REFS takes them."""

    def __init__(self, lists: list[tuple[str, str, str]]) -> None:
        super().__init__(f"{len(lists)} stale reference lists")
        self.lists = lists


def decode_slice(store_id: str, reply: list[Any]) -> EntitySlice:
    """The SLICE script's {version, found keys, values, missing keys, epoch} as an EntitySlice.

    The script follows the reference lists stored beside the entities; each entity's own
    references are computed again here, and one the script did not reach (neither found nor
    missing) means its list is stale, as lists written before array-spelled references counted
    are: the slice would lack an entity Cedar reads, and a forbid on it would turn false. That
    raises StaleReferences (the store repairs the lists and reads again), never a slice.
    """
    version, found_keys, values, missing_keys, epoch = reply
    missing = frozenset(decode_key(store_id, key) for key in missing_keys)
    entities: dict[EntityUid, JsonObject] = {}
    weights: dict[EntityUid, Weight] = {}
    references: dict[EntityUid, frozenset[EntityUid]] = {}
    found: list[tuple[str, str, EntityUid]] = []
    for key, value in zip(found_keys, values, strict=True):
        uid = decode_key(store_id, key)
        entities[uid] = entity = decode_value(store_id, uid, value)
        weights[uid] = value_weight(value)
        references[uid] = entity_references(entity)
        found.append((key, value, uid))
    reached = entities.keys() | missing
    stale = [
        (key, value, refs_value(references[uid]))
        for key, value, uid in found
        if not references[uid] <= reached
    ]
    if stale:
        raise StaleReferences(stale)
    return EntitySlice(
        entities, int(version), missing, int(epoch), weights=weights, references=references
    )


def value_weight(value: str) -> Weight:
    """The weight of the entity JSON inside a stored ``{"v":<n>,"e":<json>}`` (already
    decoded, so well formed), counted as the slice script counts it."""
    whole = text_weight(value)
    # The ASCII prefix up to <json> holds 4 counted characters; the closing brace none.
    return Weight(whole.bytes - value.find(',"e":') - 6, whole.values - 4)


def decode_key(store_id: str, key: str) -> EntityUid:
    """The uid a hash field names."""
    try:
        return key_uid(key)
    except ValueError:
        return corrupt(store_id, "bad_key")


def decode_value(store_id: str, uid: EntityUid, value: str) -> JsonObject:
    """The Cedar JSON entity stored for ``uid``, checked to be one and to be ``uid``'s."""
    try:
        document = json.loads(value)
        entity = document["e"]
        if check_entity_shape(entity, "entity") != uid:
            corrupt(store_id, "uid_mismatch")
    except (ValueError, KeyError, TypeError, RequestError):
        corrupt(store_id, "bad_value")
    result: JsonObject = entity
    return result


def corrupt(store_id: str, reason: str) -> NoReturn:
    """Count and log (without content) unusable data, and fail this decision closed.

    Every decision that reads the data fails here, so the log lines are capped (the metric
    counts each one): a key of the wrong type under load wrote a line per decision, and once
    stderr was not drained fast enough the write held the event loop until the decisions'
    deadlines (attack round 20)."""
    metrics.CORRUPT_ENTITIES.labels(reason=reason).inc()
    if _LOGS.admit("entity_data_corrupt", log):
        log.error("entity_data_corrupt", store=store_id, reason=reason)
    raise EntityDataError("stored entity data for this request is unreadable")

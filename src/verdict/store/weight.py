"""The weight of stored Cedar JSON: its bytes and a bound of its values, counted from the text.

Cedar's time grows with the values it reads far more than with bytes, so one evaluation's
stored slice is bounded in both. Values are counted from the text (no parse) so that the Redis
slice script and Python count the same number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Weight:
    """UTF-8 bytes of a piece of JSON and a bound of its values (see ``text_weight``)."""

    bytes: int
    values: int

    def __add__(self, other: Weight) -> Weight:
        return Weight(self.bytes + other.bytes, self.values + other.values)

    def exceeds(self, limit: Weight) -> bool:
        """Whether either measure is over ``limit``'s."""
        return self.bytes > limit.bytes or self.values > limit.values


NO_WEIGHT = Weight(0, 0)
# Each value inside a container follows '[', ',' or ':', each key '{' or ','.
STRUCTURAL = "[{,:"


def text_weight(text: str) -> Weight:
    """JSON text's UTF-8 bytes and its ``[``, ``{``, ``,`` and ``:`` characters (those inside
    strings too: the bound errs high, never low), as the Redis slice script counts them."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    count = text.count  # four plain calls: a generator over STRUCTURAL costs three times more
    return Weight(size, count("[") + count("{") + count(",") + count(":"))


# The one serialisation Verdict stores: compact JSON, non-ASCII text as it is. orjson writes it
# in a fifth of json's time (a bulk load of 300,000 entities spent 1.2 CPU-seconds in json's C
# encoder); json writes what orjson refuses (a lone surrogate, which the strict parse refuses
# before anything is stored, or an integer past 64 bits), in the same form.
# tests/unit/test_text_weight.py holds the two to the same text.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def entity_text(entity: Any) -> str:
    """The one serialisation of a Cedar JSON entity that Verdict stores and weighs
    (``json.dumps(entity, ensure_ascii=False, separators=(",", ":"))``), whatever the text it
    was read from: an entity weighs the same however it was written and loaded."""
    try:
        return orjson.dumps(entity).decode()
    except (orjson.JSONEncodeError, UnicodeDecodeError):
        return _ENCODER.encode(entity)


def json_weight(entity: Any) -> Weight:
    """``text_weight`` of an entity as Verdict stores it."""
    return text_weight(entity_text(entity))

"""The weight of stored Cedar JSON: its bytes and a bound of its values, counted from the text.

Cedar's time grows with the values it reads far more than with bytes, so one evaluation's
stored slice is bounded in both. Values are counted from the text (no parse) so that the Redis
slice script and Python count the same number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any


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


# One encoder for every entity: json.dumps with options builds a new encoder per call, and
# JSONEncoder.encode a new C encoder per call (a third of a bulk load's encoding time): the C
# encoder is made once, with JSONEncoder(ensure_ascii=False)'s own options.
_ENCODER = json.JSONEncoder(ensure_ascii=False)
_C_ENCODE = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None,  # no circular check: parsed JSON has no cycles
        _ENCODER.default,
        encode_basestring,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        False,
        False,
        True,
    )
)


def entity_text(entity: Any) -> str:
    """The one serialisation of a Cedar JSON entity that Verdict stores and weighs
    (``json.dumps(entity, ensure_ascii=False)``)."""
    if _C_ENCODE is None or isinstance(entity, str):
        return _ENCODER.encode(entity)
    return "".join(_C_ENCODE(entity, 0))


def json_weight(entity: Any) -> Weight:
    """``text_weight`` of an entity as Verdict stores it."""
    return text_weight(entity_text(entity))

"""Domain types shared by every layer: entity uids, authorization requests and results."""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

JsonObject = dict[str, Any]

# Cedar's grammar: Path := IDENT ('::' IDENT)*, IDENT ASCII and not a reserved word.
_IDENT = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*", re.ASCII)
_RESERVED = frozenset({"true", "false", "if", "then", "else", "in", "is", "like", "has", "__cedar"})
TYPE_NAME_PROBLEM = "must be a Cedar entity type name, e.g. Loan or Lending::Loan"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SIMPLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}


def is_type_name(text: str) -> bool:
    """Whether ``text`` is a Cedar entity type name (``Loan``, ``Lending::Loan``)."""
    # A store has few types, checked for every uid: remember short ones (never long ones, so
    # a caller cannot fill the cache with megabytes of invented names).
    return _cached_type_name(text) if len(text) <= 128 else _type_name(text)


def _type_name(text: str) -> bool:
    return all(
        _IDENT.fullmatch(part) is not None and part not in _RESERVED for part in text.split("::")
    )


_cached_type_name = functools.lru_cache(maxsize=4096)(_type_name)


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (not Unicode text; cannot be sent or stored)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def quote_id(entity_id: str) -> str:
    """``entity_id`` as a Cedar string literal, escaped so it reads back exactly."""
    out = []
    for char in entity_id:
        if char in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[char])
        elif char.isprintable():  # surrogates and controls are not
            out.append(char)
        else:
            out.append(f"\\u{{{ord(char):x}}}")
    return '"' + "".join(out) + '"'


def shown_text(text: str) -> str:
    """``text`` for a terminal: every control or unprintable character escaped (``\\x1b``,
    ``\\u202e``), so that text a server or a file chose cannot move the cursor or rewrite
    what was printed (a hostile server printed "decision: ALLOW" over a DENY, round 23)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class EntityUid(NamedTuple):
    """A Cedar entity uid; ``id`` is arbitrary UTF-8 and never spliced into Cedar syntax.

    A named tuple, not a dataclass: a decision hashes and compares dozens of uids (slices,
    ancestry, the policy index), and a tuple does both in C.
    """

    type: str
    id: str

    def to_json(self) -> dict[str, str]:
        """The ``{"type", "id"}`` form Cedar accepts without re-parsing."""
        return {"type": self.type, "id": self.id}

    def __str__(self) -> str:
        """Cedar's own ``Type::"id"`` form, every control or unprintable character escaped."""
        return f"{self.type}::{quote_id(self.id)}"


class Decision(enum.Enum):
    """The outcome of an authorization decision."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """One question: may ``principal`` perform ``action`` on ``resource`` in ``context``."""

    principal: EntityUid
    action: EntityUid
    resource: EntityUid
    context: Mapping[str, Any] = field(default_factory=dict)
    store_id: str = ""
    # Cedar JSON entities supplied by the caller for this request only.
    extra_entities: tuple[JsonObject, ...] = ()
    # Read-your-writes: entity data at least this version (0 = any).
    min_entity_version: int = 0
    # Ask for an explanation of every policy whose scope matched (engine/explain.py).
    explain: bool = False
    # time.monotonic() by which the answer is needed (from the caller's deadline), if any.
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class EvaluationError:
    """A policy whose evaluation raised an error; ``message`` is a data-free category."""

    policy_id: str
    message: str
    # Cedar's full text; may contain entity data, so it is only shown by offline tools.
    detail: str = ""


class DenyKind(enum.Enum):
    """Why a DENY is a DENY."""

    EXPLICIT_FORBID = "EXPLICIT_FORBID"
    NO_PERMIT_MATCHED = "NO_PERMIT_MATCHED"
    EVALUATION_ERROR = "EVALUATION_ERROR"
    ENTITY_MISSING = "ENTITY_MISSING"


@dataclass(frozen=True, slots=True)
class AuthorizationResult:
    """The answer to one request, with the evidence that produced it."""

    decision: Decision
    determining_policies: tuple[str, ...]
    errors: tuple[EvaluationError, ...]
    policy_version: str
    store_id: str
    # True when a permit matched but evaluation errors forced DENY (fail closed).
    denied_for_errors: bool = False
    # Entity data version the decision used (0 for stores without versions).
    entity_version: int = 0
    # Why a DENY is a DENY (None for an ALLOW); set by the engine once it knows the slice.
    deny_kind: DenyKind | None = None
    # With AuthorizationRequest.explain: engine.explain.PolicyExplanation values, in load order.
    explanations: tuple[Any, ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether the decision is ALLOW."""
        return self.decision is Decision.ALLOW

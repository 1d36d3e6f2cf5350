"""Immutable snapshots of loaded policy stores: what one decision is evaluated against."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from verdict.cedar import PolicySetHandle, SchemaHandle, schema_text
from verdict.errors import RequestError
from verdict.model import EntityUid
from verdict.policy.index import PolicyIndex
from verdict.schema_shape import SchemaShape, ShapeSyntaxError, parse_shape


class ValidationMode(enum.Enum):
    """Whether policies must validate against the store's schema to load."""

    STRICT = "strict"
    OFF = "off"


class ErrorMode(enum.Enum):
    """What an evaluation error does to a decision."""

    DENY = "deny"  # any error makes the decision DENY (fail closed)
    SKIP = "skip"  # exact Cedar semantics: erroring policies are skipped, errors reported


class EntitiesSource(enum.Enum):
    """Who vouches that a Redis store's entities are complete (sets its load marker)."""

    LOAD = "load"  # only `verdict entities load`; writes to an unmarked store are refused
    WRITES = "writes"  # also the first write (API-populated stores)


@dataclass(frozen=True)
class StoreSettings:
    """Per-store settings read from ``store.toml``."""

    validation: ValidationMode
    on_evaluation_error: ErrorMode
    # Entity types callers may send in entities_json (never actions); empty: none at all.
    request_entity_types: frozenset[str] = frozenset()
    entities_source: EntitiesSource = EntitiesSource.LOAD
    # Context attributes the decision audit log may record (others can carry loan data).
    audit_context: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PolicyInfo:
    """One policy or template as loaded: stable id and where it was written."""

    id: str
    file: str
    line: int
    effect: str
    is_template: bool
    description: str = ""
    # Hash of the policy's Cedar JSON form (a link: its template's and its values): tells a
    # changed policy from a moved or reformatted one (`verdict diff`).
    fingerprint: str = ""
    # For a template-linked policy, the template it links ("" otherwise).
    template: str = ""

    @property
    def location(self) -> str:
        """``file:line`` of the policy's first line."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class StoreSnapshot:
    """A fully loaded, validated policy store; never mutated after construction."""

    store_id: str
    root: Path
    policies: Mapping[str, PolicyInfo]
    # Evaluable policies by scope; the policy sets of selections (see policy/index.py).
    index: PolicyIndex
    schema: SchemaHandle | None
    settings: StoreSettings
    version: str
    # Uids written literally in policy text (scopes and conditions): no request may define
    # one of them (engine/request_entities.py).
    literal_uids: frozenset[EntityUid]
    # The literal uids whose stored data a condition may read: always part of a request's
    # entity slice (policy/references.py; the others are never fetched).
    read_uids: frozenset[EntityUid] = frozenset()
    entities_file: Path | None = None
    # Content hashes of entities.json and of the schema file ("" when absent): a reload
    # re-reads the embedded store's entities when either changes (README, "Changing policies").
    entities_version: str = ""
    schema_version: str = ""
    # Position of each policy id in load order, to report policies in a stable order.
    rank: Mapping[str, int] = field(default_factory=dict)
    # Loaded from files that matched the store's seal (policy/seal.py); the digest the seal
    # gives entities.json ("" unsealed, seal.SEALED_ABSENT: sealed without one), which its
    # readers check on the bytes they parse.
    sealed: bool = False
    sealed_entities: str = ""

    @property
    def policy_set(self) -> PolicySetHandle:
        """Every policy of the store in one set (built on demand above the index's prebuild
        size; for tools and tests: decisions use the index's selections)."""
        return self.index.policy_set(self.index.full_key)

    @cached_property
    def schema_shape(self) -> SchemaShape | None:
        """The schema's entity types, actions and context types, read once per snapshot when
        an error first needs them (None without a schema, or if the rendering is not read:
        then errors keep their generic text)."""
        if self.schema is None:
            return None
        try:
            return parse_shape(schema_text(self.schema))
        except (ShapeSyntaxError, RecursionError):
            return None

    def in_order(self, policy_ids: Iterable[str]) -> tuple[str, ...]:
        """``policy_ids`` in load order (Cedar reports them in no particular order)."""
        return tuple(sorted(policy_ids, key=self.position))

    def position(self, policy_id: str) -> int:
        """Load-order position of a policy id (unknown ids sort last)."""
        return self.rank.get(policy_id, len(self.rank))


@dataclass(frozen=True)
class PolicySnapshot:
    """Every store the server answers for, and which one an empty store id means."""

    stores: Mapping[str, StoreSnapshot]
    default_store: str

    def resolve(self, store_id: str) -> StoreSnapshot:
        """The store a request names (empty = default), or a RequestError naming the field."""
        store = self.stores.get(store_id or self.default_store)
        if store is None:
            raise RequestError("policy_store_id", "names no loaded policy store")
        return store

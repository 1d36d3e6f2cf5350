"""The bounds on entity data one request or one write may make Cedar (and Python) work through."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HierarchyLimits:
    """Bounds on parent graphs; Cedar's ancestor computation is quadratic in chain length."""

    # Longest parent chain, in edges (an entity without parents has depth 0).
    max_depth: int = 100
    # Distinct ancestors of any one entity.
    max_ancestors: int = 200
    # Entity-ancestor pairs in one evaluation: the size of the closure Cedar computes.
    max_pairs: int = 20_000


@dataclass(frozen=True)
class EntityLimits:
    """Every entity limit the engine enforces; defaults match ``verdict.config.Settings``."""

    max_request_entities: int = 100
    max_write_entities: int = 10_000
    max_entity_bytes: int = 64 * 1024
    # JSON values of one written entity: Cedar converts each in every decision that loads it.
    max_entity_values: int = 1_000
    max_slice_entities: int = 1_000
    # Stored entity JSON one Cedar call reads (the stores refuse one slice over them; batch
    # unions are split to stay within them): bytes, and values counted from the text.
    max_slice_bytes: int = 1024 * 1024
    max_slice_values: int = 16_000
    hierarchy: HierarchyLimits = HierarchyLimits()


DEFAULT_LIMITS = EntityLimits()

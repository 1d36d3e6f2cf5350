"""The bounds on entity data one request or one write may make Cedar (and Python) work through."""

from __future__ import annotations

from dataclasses import dataclass, field

from verdict.store.parent_graph import HierarchyLimits as HierarchyLimits


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
    hierarchy: HierarchyLimits = field(default_factory=HierarchyLimits)


DEFAULT_LIMITS = EntityLimits()

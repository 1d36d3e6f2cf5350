"""The memory store's pre-parsed entity sets: one Cedar handle per store version, built off the
event loop after a load or a write and installed in one assignment with the version it reflects.

Cedar spends two thirds of a decision re-parsing, schema-checking and closing the same entities
when they are passed as a list; a handle does that once per version. A decision uses the handle
only when it is of exactly the version the decision read, and was parsed against the very
schema the decision uses; anything else (a build still running, a build that failed, another
schema) takes the list path, as before handles existed.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from verdict import cedar
from verdict.cedar import CedarError, EntitiesHandle, SchemaHandle
from verdict.daemon_pool import DaemonPool
from verdict.model import JsonObject
from verdict.store.base import SliceLimits, StoredEntity

log = structlog.get_logger(__name__)
# Builds of parsed handles (pure computation, the GIL released in Cedar): a stop abandons a
# build in progress instead of waiting for it at the exit (seconds for a large store).
HANDLE_WORK = DaemonPool(2, "verdict-entity-handles")


class SetShape(enum.Enum):
    """What a store's whole parent graph allows (judged by the engine's hierarchy limits)."""

    # A cycle, a chain too deep or an entity with too many ancestors: never handed to Cedar as
    # a whole (a long cycle crashes cedarpy); decisions take the list path and refuse it.
    REFUSED = "refused"
    # Every slice of it is within the hierarchy limits.
    BOUNDED = "bounded"
    # Safe to parse, but a slice could break a limit: decisions still walk their slice.
    UNBOUNDED = "unbounded"


# Judges a whole store's entities; injected by the composition root (the engine owns the limits).
Vet = Callable[[Sequence[JsonObject]], SetShape]


@dataclass(frozen=True, eq=False)
class VersionHandle:
    """A store's entities at ``version``, parsed once. ``bounded``: every slice of them is
    within every read limit (count, bytes, values, hierarchy), so a read may skip its walk."""

    version: int
    entities: EntitiesHandle
    bounded: bool


# (version, a copy of the entities at that version), read on the event loop.
Source = Callable[[str], tuple[int, list[StoredEntity]]]


class VersionHandles:
    """One builder task per store; it rebuilds until its handle reflects the store's version.

    Writes in quick succession coalesce (a build reads the newest version when it starts).
    After each build the task rests as long as the build took, so a store written without
    pause costs at most half a core in builds; decisions meanwhile take the list path.
    """

    def __init__(
        self,
        source: Source,
        schemas: Mapping[str, SchemaHandle | None],
        limits: SliceLimits,
        vet: Vet,
        max_entities: int,
    ) -> None:
        self._source = source
        self._schemas = dict(schemas)
        self._limits = limits
        self._vet = vet
        self._max_entities = max_entities
        self._handles: dict[str, VersionHandle] = {}
        self._tried: dict[str, int] = {}  # the newest version a build was attempted at
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.builds = 0  # handles built, for tests and benchmarks

    def current(
        self, store_id: str, version: int, schema: SchemaHandle | None
    ) -> VersionHandle | None:
        """The handle of exactly ``version`` parsed against ``schema``, else None (and a build
        is started when none has been tried at that version)."""
        handle = self._handles.get(store_id)
        if handle is not None and handle.version == version:
            return handle if handle.entities.schema is schema else None
        self.changed(store_id, version)
        return None

    def set_schema(self, store_id: str, schema: SchemaHandle | None) -> None:
        """A store's schema from now on (a reload); handles are built against it."""
        self._schemas[store_id] = schema
        self._tried.pop(store_id, None)

    def forget(self, store_id: str) -> None:
        """A store that was removed: no handle, no builds."""
        self._schemas.pop(store_id, None)
        self._handles.pop(store_id, None)
        self._tried.pop(store_id, None)
        task = self._tasks.pop(store_id, None)
        if task is not None:
            task.cancel()

    def installed(self, store_id: str) -> VersionHandle | None:
        """The newest handle built for a store, whatever its version."""
        return self._handles.get(store_id)

    def changed(self, store_id: str, version: int) -> None:
        """The store is at ``version`` now: build its handle unless one is being built."""
        if store_id not in self._schemas or self._tried.get(store_id) == version:
            return
        task = self._tasks.get(store_id)
        if task is None or task.done():
            self._tasks[store_id] = asyncio.get_running_loop().create_task(
                self._build_loop(store_id), name=f"verdict-entity-handle-{store_id}"
            )

    async def settle(self) -> None:
        """Wait until every store's handle reflects its version (or failed to build)."""
        for store_id in self._schemas:
            self.changed(store_id, self._source(store_id)[0])
        while pending := [t for t in self._tasks.values() if not t.done()]:
            await asyncio.gather(*pending)

    async def close(self) -> None:
        """Stop building."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _build_loop(self, store_id: str) -> None:
        while True:
            version, entities = self._source(store_id)  # one version, copied on the loop
            if self._tried.get(store_id) == version:
                return
            self._tried[store_id] = version
            started = time.monotonic()
            built = await self._build(store_id, version, entities)
            current = self._handles.get(store_id)
            if built is not None and (current is None or current.version < built.version):
                self._handles[store_id] = built  # the one assignment decisions see
            await asyncio.sleep(time.monotonic() - started)

    async def _build(
        self, store_id: str, version: int, entities: list[StoredEntity]
    ) -> VersionHandle | None:
        if len(entities) > self._max_entities:
            return None
        if store_id not in self._schemas:  # removed by a reload meanwhile
            return None
        schema = self._schemas[store_id]
        try:
            built = await HANDLE_WORK.run(
                build_handle, entities, schema, version, self._limits, self._vet
            )
        except CedarError:
            # Entities the schema (or Cedar) refuses as a whole: the previous handle stays,
            # and decisions at this version take the list path, which reports the problem.
            log.warning("entity_handle_refused", store=store_id, version=version)
            return None
        except Exception as exc:  # a build is an optimisation: its failure must not spread
            log.error("entity_handle_failed", store=store_id, error_type=type(exc).__name__)
            return None
        if built is not None:
            self.builds += 1
        return built


def build_handle(
    entities: Sequence[StoredEntity],
    schema: SchemaHandle | None,
    version: int,
    limits: SliceLimits,
    vet: Vet,
) -> VersionHandle | None:
    """Parse one version's entities (in a worker thread: Python's part switches the GIL every
    few milliseconds, Cedar's parse releases it). None when the graph must not reach Cedar."""
    documents = [e.json for e in entities]
    shape = vet(documents)
    if shape is SetShape.REFUSED:
        return None
    text = "[" + ",".join([json.dumps(d) for d in documents]) + "]"
    handle = cedar.parse_entities(text, schema, release_gil=True)
    weight_bytes = sum(e.weight.bytes for e in entities)
    weight_values = sum(e.weight.values for e in entities)
    bounded = (
        shape is SetShape.BOUNDED
        and len(entities) <= limits.max_entities
        and weight_bytes <= limits.max_bytes
        and weight_values <= limits.max_values
    )
    return VersionHandle(version, handle, bounded)

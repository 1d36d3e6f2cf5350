"""Load one store's entities.json into Redis: parse, validate and write, in overlapping phases.

Cedar's entity parser is the slow part (tens of µs per entity). This thread parses the file item
by item, strictly, and hands Cedar each part of ``PART_ENTITIES`` entities as soon as it is
parsed; Cedar checks the parts on threads of its own with the GIL released, beside the parse
and the writes. A part is checked alone exactly as it would be within the whole: duplicates
and the parent graph, the only things Cedar checks across entities, are checked here over the
whole file (and within each part before Cedar sees it: a long cycle crashes cedarpy), and the
actions, whose hierarchy Cedar compares with the schema's, go together in one part. The staged
load becomes the store's data only once Cedar has accepted every part, so a file Cedar rejects
changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from verdict import cedar
from verdict.cedar import SchemaHandle
from verdict.cedar_json import loads_strict
from verdict.errors import Diagnostic, PolicyLoadError, RequestError
from verdict.files import FileReadError, read_text
from verdict.heap import collector_paused
from verdict.json_values import array_items
from verdict.policy.file_limits import MAX_ENTITIES_FILE_BYTES
from verdict.policy.seal import entities_problem, text_digest
from verdict.progress import Reporter
from verdict.schema_shape import SchemaShape
from verdict.store.base import StoredEntity
from verdict.store.bulk import load_entities
from verdict.store.entity_file import (
    DEFAULT_HIERARCHY,
    EntityShaper,
    is_action,
    refusal_reason,
)
from verdict.store.entity_kinds import EntityKinds
from verdict.store.json_lines import error_line
from verdict.store.parent_graph import HierarchyLimits
from verdict.store.redis_store import RedisEntityStore

# Entities per part Cedar checks: parts of a few thousand cost Cedar ~25% less per entity than
# one whole file of 300,000, besides running on every core.
PART_ENTITIES = 2_500
MAX_DEPTH = 64


@dataclass(frozen=True)
class LoadReport:
    """What a load did: entities written, the store's version after it, and the time of the
    whole load (read to switch) and of its Redis writes."""

    count: int
    version: int
    seconds: float
    write_seconds: float

    def summary(self, store_id: str) -> str:
        overall = self.count / max(self.seconds, 1e-9)
        written = self.count / max(self.write_seconds, 1e-9)
        return (
            f"{store_id}: {self.count:,} entities in {self.seconds:.2f}s ({overall:,.0f}/s; "
            f"Redis writes {self.write_seconds:.2f}s, {written:,.0f}/s), version {self.version}"
        )


async def load_entities_file(
    store: RedisEntityStore,
    store_id: str,
    path: Path,
    schema: SchemaHandle | None,
    progress: Reporter,
    *,
    shown: str,
    chunk: int,
    hierarchy: HierarchyLimits = DEFAULT_HIERARCHY,
    sealed: str = "",
    shape: SchemaShape | None = None,
) -> LoadReport:
    """Make ``path`` the entities of ``store_id`` in Redis; PolicyLoadError (naming ``shown``
    and, where known, the line) when the file cannot be read, parsed or validated, or does
    not have the ``sealed`` digest its store's seal gives it (nothing is written then).
    ``shape``: the schema's, if read; Cedar then checks one entity of each kind."""
    started = time.perf_counter()
    text = ""
    checks = PartChecks(schema, kinds=EntityKinds(schema is not None, shape))
    try:
        with progress.phase("read"):
            text = read_text(path, MAX_ENTITIES_FILE_BYTES)
            unsealed = entities_problem(shown, text_digest(text) if sealed else "", sealed)
            if unsealed is not None:
                raise PolicyLoadError([unsealed])
        with progress.phase("parse"), collector_paused():
            entities = parse_in_parts(text, checks, hierarchy)

        async def conforms() -> None:
            with progress.phase("validate"):
                if not await checks.all_conform():  # say why: Cedar's detailed reason
                    document = [entity.json for entity in entities]
                    raise RequestError("entities", refusal_reason(document, schema))

        write_started = time.perf_counter()
        with progress.phase("write", total=len(entities)) as writing:
            version = await load_entities(
                store,
                store_id,
                entities,
                chunk=chunk,
                on_written=writing.advance,
                before_switch=conforms,
            )
        write_seconds = time.perf_counter() - write_started
    except FileReadError as exc:
        raise PolicyLoadError([Diagnostic(shown, 0, f"invalid entities: {exc}")]) from None
    except RequestError as exc:
        line = error_line(text, exc)
        raise PolicyLoadError([Diagnostic(shown, line, f"invalid entities: {exc}")]) from None
    finally:
        checks.close()  # a failed parse or write: the parts still queued are moot
    seconds = time.perf_counter() - started
    return LoadReport(len(entities), version, seconds, write_seconds)


def parse_in_parts(
    text: str, checks: PartChecks, hierarchy: HierarchyLimits, part_size: int = PART_ENTITIES
) -> list[StoredEntity]:
    """The file's entities, checked for shape, uniqueness and hierarchy; each part handed to
    ``checks`` as soon as it is parsed (the actions together, last). RequestError names the
    item at fault."""
    items = array_items(text, "entities", MAX_DEPTH)
    if items is None:  # not an array: invalid JSON is refused where the whole parse finds it
        loads_strict(text, "entities", max_depth=MAX_DEPTH)
        raise RequestError("entities", "must be a JSON array of Cedar entities")
    shaper = EntityShaper("entities", keep_text=True)
    part: list[StoredEntity] = []
    actions: list[StoredEntity] = []
    for item in items:
        entity = shaper.add(item)
        (actions if is_action(entity) else part).append(entity)
        if len(part) == part_size:
            # Cedar closes each part's hierarchy: it must never see a long cycle or chain.
            shaper.check_hierarchy(hierarchy, among=[e.uid for e in part])
            checks.submit(part)
            part = []
    shaper.check_hierarchy(hierarchy)  # the whole graph: what crosses parts
    for rest in (part, actions):
        if rest:
            checks.submit(rest)
    return list(shaper.entities.values())


class PartChecks:
    """Cedar's check of parts of an entities document, on threads with the GIL released.
    Given ``kinds``, an entity of a kind already submitted is not submitted again: Cedar's
    answer for it is the answer for its kind (store/entity_kinds.py)."""

    def __init__(
        self,
        schema: SchemaHandle | None,
        threads: int | None = None,
        kinds: EntityKinds | None = None,
    ) -> None:
        self._schema = schema
        self._kinds = kinds
        self._seen: set[Hashable] = set()
        self.submitted = 0  # entities Cedar was given
        # One core is the parse's: the parts are ready no faster than it makes them, and a
        # checking thread beside it on that core slows the parse, the longest step.
        count = threads if threads is not None else max(1, min(4, (os.cpu_count() or 2) - 1))
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="verdict-entities-check")
        self._pending: list[Future[bool]] = []

    def submit(self, entities: Sequence[StoredEntity]) -> None:
        """Check these entities (their stored text: exactly what is written) as one document."""
        if self._kinds is not None:
            entities = [entity for entity in entities if self._new_kind(entity)]
            if not entities:
                return
        self.submitted += len(entities)
        document = "[" + ",".join(_text(entity) for entity in entities) + "]"
        self._pending.append(
            self._pool.submit(cedar.entities_conform, document, self._schema, release_gil=True)
        )

    def _new_kind(self, entity: StoredEntity) -> bool:
        assert self._kinds is not None
        kind = self._kinds.key(entity.json)
        if kind is None:
            return True
        if kind in self._seen:
            return False
        self._seen.add(kind)
        return True

    async def all_conform(self) -> bool:
        """Whether Cedar accepted every part submitted."""
        answers = await asyncio.gather(*(asyncio.wrap_future(f) for f in self._pending))
        return all(answers)

    def close(self) -> None:
        """Drop the parts not started; one under way ends on its own (Cedar cannot be stopped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _text(entity: StoredEntity) -> str:
    assert entity.text is not None, "parsed with keep_text"
    return entity.text

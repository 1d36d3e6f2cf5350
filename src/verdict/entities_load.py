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
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from verdict import cedar
from verdict.cedar import SchemaHandle
from verdict.cedar_json import loads_strict
from verdict.entities_halves import (
    ITEMS_PER_BEAT,
    SPLIT_MIN_BYTES,
    HalfJob,
    HalfReport,
    HalfStaged,
    SecondHalf,
    split_offset,
)
from verdict.entity_items import EntityItems, entity_items
from verdict.errors import Diagnostic, PolicyLoadError, RequestError
from verdict.files import FileReadError, read_text
from verdict.heap import collector_paused, keep_until_exit
from verdict.model import EntityUid
from verdict.policy.file_limits import MAX_ENTITIES_FILE_BYTES
from verdict.policy.seal import entities_problem, text_digest
from verdict.progress import Phase, Reporter
from verdict.schema_shape import SchemaShape
from verdict.store.base import StoredEntity
from verdict.store.bulk import discard, load_entities, new_token, stage_entities
from verdict.store.entity_file import (
    DEFAULT_HIERARCHY,
    EntityShaper,
    cedar_refusal,
    is_action,
)
from verdict.store.entity_kinds import EntityKinds
from verdict.store.json_lines import error_line
from verdict.store.parent_graph import HierarchyLimits
from verdict.store.redis_store import RedisEntityStore

# Entities per part Cedar checks: parts of a few thousand cost Cedar ~25% less per entity than
# one whole file of 300,000, besides running on every core.
PART_ENTITIES = 2_500
MAX_DEPTH = 64
# Said with the validate phase's start line: the phase runs beside the others (Cedar's threads
# check each part as the parse hands it on) and ends before the switch, which waits for it.
VALIDATE_NOTE = (
    ", by Cedar beside the parse and the write; the switch to the new entities waits for it"
)
CHILD_QUIET_MARGIN = 5.0  # seconds beyond one Redis call's bound (entities_halves.HalfJob)


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
    connect: Callable[[], RedisEntityStore] | None = None,
    split_min_bytes: int = SPLIT_MIN_BYTES,
    keep: bool = False,
) -> LoadReport:
    """Make ``path`` the entities of ``store_id`` in Redis; PolicyLoadError (naming ``shown``
    and, where known, the line) when the file cannot be read, parsed or validated, or does
    not have the ``sealed`` digest its store's seal gives it (nothing is written then).
    ``shape``: the schema's, if read; Cedar then checks one entity of each kind. ``connect``:
    a new store on the same Redis; given one, a file of ``split_min_bytes`` or more is loaded
    in two halves, the second by a forked process (entities_halves.py). ``keep``: hold what
    was parsed until the process ends (``heap.keep_until_exit``: a command about to end)."""
    started = time.perf_counter()
    text = ""
    load = _Load(store, store_id, schema, progress, chunk, hierarchy, shape)
    try:
        with progress.phase("read"):
            text = read_text(path, MAX_ENTITIES_FILE_BYTES)
            unsealed = entities_problem(shown, text_digest(text) if sealed else "", sealed)
            if unsealed is not None:
                raise PolicyLoadError([unsealed])
        done = None
        if connect is not None and (offset := split_offset(text, split_min_bytes)) is not None:
            done = await load.in_halves(text, offset, connect)
        if done is None:  # small, one core, or the second half's start was a wrong guess
            done = await load.whole(text)
    except FileReadError as exc:
        raise PolicyLoadError([Diagnostic(shown, 0, f"invalid entities: {exc}")]) from None
    except RequestError as exc:
        line = error_line(text, exc)
        raise PolicyLoadError([Diagnostic(shown, line, f"invalid entities: {exc}")]) from None
    count, version, write_seconds = done
    if keep:
        keep_until_exit(text, load.parsed)
    return LoadReport(count, version, time.perf_counter() - started, write_seconds)


class _Load:
    """One store's load, whole or in halves: (entities, version, seconds of the writes)."""

    def __init__(
        self,
        store: RedisEntityStore,
        store_id: str,
        schema: SchemaHandle | None,
        progress: Reporter,
        chunk: int,
        hierarchy: HierarchyLimits,
        shape: SchemaShape | None,
    ) -> None:
        self.store, self.store_id, self.schema = store, store_id, schema
        self.progress, self.chunk, self.hierarchy, self.shape = progress, chunk, hierarchy, shape
        self.parsed: list[object] = []  # what a load that succeeded parsed

    def validate_phase(self) -> AbstractContextManager[Phase]:
        """Cedar's checks, which run on threads of their own from the parse's first part on;
        the phase ends once the last is answered, before the switch (which waits for it)."""
        return self.progress.phase("validate", note=VALIDATE_NOTE)

    def checks(self) -> PartChecks:
        return PartChecks(self.schema, kinds=EntityKinds(self.schema is not None, self.shape))

    def refusal(self, text: str) -> RequestError:
        """Cedar said no to a part of a file loaded in halves: its detailed reason for the
        whole file (parsed again: the second half's entities are the child's)."""
        return cedar_refusal(loads_strict(text, "entities"), self.schema)

    async def whole(self, text: str) -> tuple[int, int, float]:
        checks = self.checks()
        try:
            with ExitStack() as validating:
                with self.progress.phase("parse") as parsing, collector_paused():
                    validating.enter_context(self.validate_phase())
                    entities = parse_in_parts(text, checks, self.hierarchy, parsing=parsing)

                async def conforms() -> None:
                    if not await checks.all_conform():  # say why: Cedar's detailed reason
                        document = [entity.json for entity in entities]
                        raise cedar_refusal(document, self.schema)
                    validating.close()  # its end, before the switch it lets happen

                write_started = time.perf_counter()
                with self.progress.phase("write", total=len(entities)) as writing:
                    version = await load_entities(
                        self.store,
                        self.store_id,
                        entities,
                        chunk=self.chunk,
                        on_written=writing.advance,
                        before_switch=conforms,
                    )
            self.parsed.append(entities)
            return len(entities), version, time.perf_counter() - write_started
        finally:
            checks.close()  # a failed parse or write: the parts still queued are moot

    async def in_halves(
        self, text: str, offset: int, connect: Callable[[], RedisEntityStore]
    ) -> tuple[int, int, float] | None:
        """The load with the items from ``offset`` on taken by a forked process; None when
        ``offset`` proves not to start an item, or the child fails: nothing was switched."""
        token = new_token()
        job = HalfJob(
            text, offset, connect, self.store_id, token, self.schema, self.shape,
            self.hierarchy, self.chunk, MAX_DEPTH,
            # Its longest silence: one Redis call that fails after every attempt, and more.
            quiet_seconds=self.store.call_seconds + CHILD_QUIET_MARGIN,
        )  # fmt: skip
        half = SecondHalf(job)
        checks = self.checks()  # after the fork: the child must not inherit its threads
        switched = False
        # Closed (its end shown) once Cedar accepted every part; a load that fails or falls
        # back to a whole load leaves it open: no end line for checks that never finished.
        validating = ExitStack()
        try:
            with self.progress.phase("parse") as parsing, collector_paused():
                validating.enter_context(self.validate_phase())
                items = entity_items(text, "entities", MAX_DEPTH, stop=offset)
                if items is None:
                    not_an_array(text)
                shaper = EntityShaper("entities", keep_text=True)
                size, ours = len(text), items

                def beat(read: int) -> None:  # both halves: the child's as of its last beat
                    child_items, child_read = half.parsing
                    parsing.reached(len(shaper.entities) + child_items, (read + child_read) / size)

                def mine() -> None:
                    beat(ours.reached)

                actions = shape_items(items, shaper, checks, self.hierarchy, beat=mine)
                if not items.aligned:
                    return None
                first = len(shaper.entities)
                parsed = await half.parsed(waiting=lambda: beat(offset))
                if parsed is not None:
                    parsing.reached(first + parsed, 1.0)
            if parsed is None:  # its parse failed (or it died): its refusal, or the whole path
                report = await half.report()
                refused = None if report.failed else self.first_refusal(shaper, report, first)
                if refused is None:
                    return None
                raise refused
            write_started = time.perf_counter()
            entities = list(shaper.entities.values())
            total = first + parsed
            with self.progress.phase("write", total=total) as writing:
                reported = asyncio.ensure_future(half.report())  # received while we stage
                try:
                    await stage_entities(
                        self.store, self.store_id, token, entities, self.chunk,
                        on_written=writing.advance,
                    )  # fmt: skip
                    report = await reported
                finally:
                    reported.cancel()
                if report.failed:
                    return None
                refused = self.first_refusal(shaper, report, first)
                if refused is not None:
                    raise refused
                shaper.include_graph(report.parents, report.positions, first)
                shaper.check_hierarchy(self.hierarchy)  # the whole graph: what crosses halves
                texts = [_text(entity) for entity in actions] + report.action_texts
                if texts:
                    checks.submit_texts(texts)
                staged = await _staged(half, writing)
                if staged.failed:
                    return None
                if not (await checks.all_conform() and staged.conform):
                    raise self.refusal(text)
                validating.close()
                version = await self.store.switch(self.store_id, token, total)
                switched = True
            self.parsed += [shaper, entities, report]
            return total, version, time.perf_counter() - write_started
        finally:
            await half.stop()
            checks.close()
            if not switched:
                await discard(self.store, self.store_id, token)

    @staticmethod
    def first_refusal(shaper: EntityShaper, report: HalfReport, first: int) -> RequestError | None:
        """The earliest in the file of the child's refusal and an entity of its half that
        repeats one of the parent's (neither half could see that)."""
        limit = report.refusal[0] if report.refusal is not None else len(report.uids)
        for index, uid in enumerate(report.uids[:limit]):
            if uid in shaper.entities:  # a (type, id) pair finds its EntityUid
                shown = EntityUid(*uid)
                return RequestError(f"entities[{first + index}]", f"duplicate entity {shown}")
        return report.refusal_at(first)


async def _staged(half: SecondHalf, writing: Phase) -> HalfStaged:
    """The child's last answer, its staged entities added to ``writing`` while it stages."""
    shown = 0

    def catch_up() -> None:
        nonlocal shown
        staged = half.staged
        if staged > shown:
            writing.advance(staged - shown)
            shown = staged

    answer = asyncio.ensure_future(half.staged_answer())
    try:
        while not answer.done():
            catch_up()
            await asyncio.wait([answer], timeout=0.25)
        catch_up()
        return answer.result()
    finally:
        answer.cancel()


def parse_in_parts(
    text: str,
    checks: PartChecks,
    hierarchy: HierarchyLimits,
    part_size: int = PART_ENTITIES,
    parsing: Phase | None = None,
) -> list[StoredEntity]:
    """The file's entities, checked for shape, uniqueness and hierarchy; each part handed to
    ``checks`` as soon as it is parsed (the actions together, last). RequestError names the
    item at fault. ``parsing`` hears, every ``ITEMS_PER_BEAT`` items, how many were parsed
    and how much of the text was read."""
    items = entity_items(text, "entities", MAX_DEPTH)
    if items is None:  # not an array: invalid JSON is refused where the whole parse finds it
        not_an_array(text)
    shaper = EntityShaper("entities", keep_text=True)
    beat = None
    if parsing is not None:
        shown, size, read = parsing, len(text), items

        def beat() -> None:
            shown.reached(len(shaper.entities), read.reached / size)

    actions = shape_items(items, shaper, checks, hierarchy, part_size, beat=beat)
    if parsing is not None:
        parsing.reached(len(shaper.entities), 1.0)
    shaper.check_hierarchy(hierarchy)  # the whole graph: what crosses parts
    if actions:
        checks.submit(actions)
    return list(shaper.entities.values())


def stop_if_cancelled() -> None:
    """Raise CancelledError when the running task was cancelled: asyncio.run answers Ctrl-C
    by cancelling its task, which a parse (it never awaits) would not see before its end."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop: nothing can cancel this
        return
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def not_an_array(text: str) -> NoReturn:
    """Refuse a document that does not open with ``[``: as invalid JSON where the whole parse
    finds it so, else as not an array."""
    loads_strict(text, "entities", max_depth=MAX_DEPTH)
    raise RequestError("entities", "must be a JSON array of Cedar entities")


def shape_items(
    items: EntityItems,
    shaper: EntityShaper,
    checks: PartChecks,
    hierarchy: HierarchyLimits,
    part_size: int = PART_ENTITIES,
    beat: Callable[[], None] | None = None,
) -> list[StoredEntity]:
    """Add ``items`` to ``shaper``, handing each part of non-action entities to ``checks`` as
    soon as it is parsed; return the actions, which Cedar must see together (not yet handed
    on). ``beat`` is called every ``ITEMS_PER_BEAT`` items. An item ``check_entity`` refuses
    is read again strictly (``EntityItems.strict_again``): the refusal is the strict parse's.
    The whole graph is the caller's to check, after the parse:
    a part whose own graph breaks a bound is kept from Cedar, and the whole graph, which holds
    it, is refused then. So a file's refusal does not depend on where its parts (or halves)
    begin: shape and syntax first, in file order, then the hierarchy (attack round 24)."""
    part: list[StoredEntity] = []
    actions: list[StoredEntity] = []
    for count, item in enumerate(items, 1):
        try:
            entity = shaper.add(item, items.last_text)
        except RequestError:
            again = items.strict_again()  # raises the strict parse's refusal, if it has one
            if again is None:
                raise
            entity = shaper.add(again)
        (actions if is_action(entity) else part).append(entity)
        if count % ITEMS_PER_BEAT == 0:
            stop_if_cancelled()
            if beat is not None:
                beat()
        if len(part) == part_size:
            _hand_on(part, shaper, checks, hierarchy)
            part = []
    if part:
        _hand_on(part, shaper, checks, hierarchy)
    return actions


def _hand_on(
    part: list[StoredEntity], shaper: EntityShaper, checks: PartChecks, hierarchy: HierarchyLimits
) -> None:
    # Cedar closes each part's hierarchy: it must never see a long cycle or chain.
    try:
        shaper.check_hierarchy(hierarchy, among=[entity.uid for entity in part])
    except RequestError:
        return
    checks.submit(part)


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
        self.submit_texts([_text(entity) for entity in entities])

    def submit_texts(self, texts: Sequence[str]) -> None:
        """Check the entities stored as ``texts`` as one document, whatever their kinds."""
        self.submitted += len(texts)
        document = "[" + ",".join(texts) + "]"
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

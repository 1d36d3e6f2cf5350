"""The second half of a large entities file, parsed, checked and staged by a forked process.

One Python thread parses ~25,000-50,000 entities a second; a load of 300,000 on two cores was
the parse on one core and little on the other. The command now forks before it parses: the
child takes the items from an offset near the middle where an item seems to start
(``guess_item_start``), the parent the items before it. Only the parent can prove the guess:
its parse must reach an item that starts exactly there (``ArrayItems.aligned``); if not (a
record inside an attribute looked like an entity), the child's work is thrown away and the
file is loaded by the parent alone, under a fresh load token.

The child shapes its items as the parent does (strictly, each part's hierarchy bounded before
Cedar sees it, Cedar asked once per kind) and answers twice. Once parsed, with what the parent
needs to judge the whole file: its uids in order (duplicates across the halves), its parent
graph (the hierarchy across them), its actions (Cedar sees them together) and its first
refusal; the parent reads this while both stage. Once staged under the parent's load token,
with Cedar's answer. The parent switches the load only when both halves and the checks across
them passed. The child writes nothing else, prints nothing and
ends with ``os._exit`` (multiprocessing's fork start), running none of the parent's handlers.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray

from verdict.cedar import SchemaHandle
from verdict.cpus import cpu_count
from verdict.entity_items import EntityItems
from verdict.errors import RequestError
from verdict.heap import collector_paused
from verdict.json_values import guess_item_start
from verdict.model import EntityUid
from verdict.schema_shape import SchemaShape
from verdict.store.bulk import stage_entities
from verdict.store.entity_file import EntityShaper
from verdict.store.entity_kinds import EntityKinds
from verdict.store.parent_graph import HierarchyLimits
from verdict.store.redis_store import RedisEntityStore

# Below this a file is parsed by one process: a fork and its answer cost ~50 ms.
SPLIT_MIN_BYTES = 2 * 1024 * 1024
PARSE_PENDING, PARSE_FAILED = -2, -1
_ITEM = re.compile(r"^entities\[(\d+)\]")


def split_offset(text: str, min_bytes: int = SPLIT_MIN_BYTES) -> int | None:
    """Where the second half of an entities array should start (None: load it whole)."""
    if len(text) < min_bytes or cpu_count() < 2:
        return None
    if "fork" not in multiprocessing.get_all_start_methods():  # not on Windows
        return None
    return guess_item_start(text, len(text) // 2)


@dataclass
class HalfReport:
    """What the child found in its items (indexes and fields counted from its first item)."""

    # Plain (type, id) pairs: equal to, and hashed as, the EntityUids they stand for, and
    # pickled ten times sooner (a NamedTuple's pickle names its class: 0.4 s per 150,000).
    uids: list[tuple[str, str]] = field(default_factory=list)
    parents: dict[EntityUid, list[EntityUid]] = field(default_factory=dict)
    positions: dict[EntityUid, int] = field(default_factory=dict)
    action_texts: list[str] = field(default_factory=list)
    refusal: tuple[int, str, str] | None = None  # (item index, field, problem)
    failed: str = ""  # an unexpected failure: its exception's type name (no text: no data)

    def refusal_at(self, offset: int) -> RequestError | None:
        """The child's refusal with its item index counted from the file's first item."""
        if self.refusal is None:
            return None
        _, where, problem = self.refusal
        return RequestError(shifted(where, offset), problem)


@dataclass(frozen=True)
class HalfStaged:
    """The child's second answer: its half staged, and whether Cedar accepted its parts."""

    conform: bool = False
    failed: str = ""  # as HalfReport's


def shifted(where: str, offset: int) -> str:
    """``entities[i]...`` as ``entities[offset + i]...`` (other fields as they are)."""
    return _ITEM.sub(lambda m: f"entities[{offset + int(m.group(1))}]", where, count=1)


@dataclass(frozen=True)
class HalfJob:
    """Everything the child needs, inherited through the fork (nothing is pickled in)."""

    text: str
    start: int
    connect: Callable[[], RedisEntityStore]
    store_id: str
    token: str
    schema: SchemaHandle | None
    shape: SchemaShape | None
    hierarchy: HierarchyLimits
    chunk: int
    max_depth: int
    # A child that shows no progress (items parsed, entities staged) for this long is taken
    # for stopped or wedged: killed, and the file loaded whole (attack round 25: a stopped
    # child kept the command waiting for good).
    quiet_seconds: float


class SecondHalf:
    """The forked process taking the items from ``job.start`` on, and its answer."""

    def __init__(self, job: HalfJob) -> None:
        context = multiprocessing.get_context("fork")
        self._answers, sender = context.Pipe(duplex=False)
        # Items parsed (PARSE_PENDING until the parse ends, PARSE_FAILED if it fails) and
        # entities staged: read by the parent for its progress.
        self._parsed: Synchronized[int] = context.Value("q", PARSE_PENDING, lock=False)
        self._staged: Synchronized[int] = context.Value("q", 0, lock=False)
        # Raised by the child as it goes (every ITEMS_PER_BEAT items, every round trip).
        self._beats: Synchronized[int] = context.Value("q", 0, lock=False)
        # While it parses, at each beat: items parsed, and characters of the text read past
        # its start (the parent's progress shows both halves).
        self._parsing: SynchronizedArray[int] = context.Array("q", 2, lock=False)
        self._quiet_seconds = job.quiet_seconds
        self._reading: asyncio.Future[object] | None = None
        self._last_beat = (0, time.monotonic())
        self._process = context.Process(
            target=_run,
            args=(
                job,
                os.getpid(),
                self._answers,
                sender,
                self._parsed,
                self._staged,
                self._beats,
                self._parsing,
            ),
            daemon=True,
        )
        self._process.start()
        sender.close()

    @property
    def parsing(self) -> tuple[int, int]:
        """Items the child has parsed so far and characters it has read, as of its last beat."""
        return int(self._parsing[0]), int(self._parsing[1])

    @property
    def staged(self) -> int:
        """Entities the child has staged so far."""
        return int(self._staged.value)

    async def parsed(self, waiting: Callable[[], None] | None = None) -> int | None:
        """How many items the child parsed, once it has (None: its parse failed, or it died
        or went quiet); ``waiting`` is called meanwhile (to show the child's progress)."""
        # A cancelled load (Ctrl-C) stops here even when the child's answer is already in:
        # the loop below would not await, and the parse phase would end as if done.
        await asyncio.sleep(0)
        while (count := int(self._parsed.value)) == PARSE_PENDING:
            if not self._process.is_alive() or self._went_quiet():
                return None
            if waiting is not None:
                waiting()
            await asyncio.sleep(0.01)
        return None if count == PARSE_FAILED else count

    def _went_quiet(self) -> bool:
        """Whether the child showed no progress for ``quiet_seconds``; if so, it is killed
        (its pipe then ends: a wait for its answer ends too)."""
        beats, since = self._last_beat
        now = time.monotonic()
        if (current := int(self._beats.value)) != beats:
            self._last_beat = (current, now)
            return False
        if now - since <= self._quiet_seconds:
            return False
        self._process.kill()
        return True

    async def report(self) -> HalfReport:
        """The child's first answer, on its parse (``failed`` set when it ended without one)."""
        answer = await self._receive()
        if isinstance(answer, HalfReport):
            return answer
        return HalfReport(failed=answer.failed or "no report")

    async def staged_answer(self) -> HalfStaged:
        """The child's last answer, once its half is staged (after ``report``)."""
        answer = await self._receive()
        await asyncio.to_thread(self._process.join, 5)
        if isinstance(answer, HalfStaged):
            return answer
        return HalfStaged(failed=answer.failed or "no answer")

    async def _receive(self) -> HalfReport | HalfStaged:
        receiving = asyncio.ensure_future(asyncio.to_thread(self._answers.recv))
        # A cancelled wait (Ctrl-C) leaves the thread reading: ``stop`` ends the child, the
        # read then ends on the closed pipe, and ``stop`` waits for it before closing ours.
        self._reading = receiving
        receiving.add_done_callback(_retrieved)
        try:
            while not receiving.done():
                await asyncio.wait([receiving], timeout=0.25)
                if not receiving.done() and self._went_quiet():
                    break  # killed: the receiving thread ends on the closed pipe
            answer = await receiving
        except (EOFError, OSError):
            await asyncio.to_thread(self._process.join, 5)
            return HalfStaged(failed=f"exit code {self._process.exitcode}")
        assert isinstance(answer, HalfReport | HalfStaged)
        return answer

    async def stop(self) -> None:
        """End the child now, whatever it is doing (its staging expires or is discarded)."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(5)
        if self._reading is not None and not self._reading.done():
            # Closing the pipe under a thread still reading it gave that thread EOFError or
            # EBADF, logged as "Task exception was never retrieved"; the killed child's end
            # is closed, so the read ends at once.
            await asyncio.wait([self._reading], timeout=5)
        self._answers.close()


def _retrieved(reading: asyncio.Future[object]) -> None:
    """Mark a pipe read's failure as seen: one nobody awaited (a cancelled load) is moot."""
    if not reading.cancelled():
        reading.exception()


def _run(
    job: HalfJob,
    parent: int,
    inherited: multiprocessing.connection.Connection,
    answers: multiprocessing.connection.Connection,
    parsed: Synchronized[int],
    staged: Synchronized[int],
    beats: Synchronized[int],
    parsing: SynchronizedArray[int],
) -> None:
    _end_with(parent)
    # Ctrl-C reaches the whole process group: the command decides, and stops this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The pipe's read end came with the fork: held here, a dead parent's pipe never breaks,
    # and an answer larger than the pipe's buffer blocked this process for good (round 24).
    inherited.close()
    # The fork copied the parent's running-loop marker; this process starts a loop of its own.
    asyncio.events._set_running_loop(None)
    try:
        asyncio.run(_half(job, (parsed, staged, beats, parsing), answers))
    except BaseException as exc:  # the parent must hear of it; never the text (loan data)
        if parsed.value == PARSE_PENDING:
            parsed.value = PARSE_FAILED
        _send(answers, HalfStaged(failed=type(exc).__name__))
    answers.close()


def _send(answers: multiprocessing.connection.Connection, answer: HalfReport | HalfStaged) -> None:
    try:
        answers.send(answer)
    except OSError:  # the command is gone: nobody to answer
        os._exit(1)


def _end_with(parent: int) -> None:
    """Have the kernel kill this process when the command that forked it ends (Linux's
    PR_SET_PDEATHSIG): a killed command's child must not stage on for a load nobody will
    switch (attack round 24). Elsewhere the pipe breaking ends it once it answers."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the command ended before the call
        os._exit(1)


_PR_SET_PDEATHSIG = 1


async def _half(
    job: HalfJob,
    shared: tuple[Synchronized[int], Synchronized[int], Synchronized[int], SynchronizedArray[int]],
    answers: multiprocessing.connection.Connection,
) -> None:
    from verdict.entities_load import PartChecks, shape_items  # one module imports the other

    parsed, staged, beats, parsing = shared
    checks = PartChecks(job.schema, kinds=EntityKinds(job.schema is not None, job.shape))
    shaper = EntityShaper("entities", keep_text=True)
    report = HalfReport()
    try:
        items = EntityItems(job.text, job.start, "entities", job.max_depth)

        def beat() -> None:
            beats.value += 1
            parsing[0] += ITEMS_PER_BEAT
            parsing[1] = items.reached - job.start

        with collector_paused():
            actions = shape_items(items, shaper, checks, job.hierarchy, beat=beat)
    except RequestError as exc:
        checks.close()
        named = _ITEM.match(exc.field)
        index = int(named.group(1)) if named else len(shaper.entities)
        report.refusal = (index, exc.field, exc.problem)
        report.uids = [(uid.type, uid.id) for uid in shaper.entities]
        parsed.value = PARSE_FAILED
        _send(answers, report)
        return
    entities = list(shaper.entities.values())
    report.uids = [(uid.type, uid.id) for uid in shaper.entities]
    report.parents, report.positions = shaper.graph
    report.action_texts = [entity.text or "" for entity in actions]
    parsed.value = len(entities)
    _send(answers, report)  # read by the parent while both halves stage
    store = job.connect()

    def count(written: int) -> None:
        staged.value += written
        beats.value += 1

    try:
        await stage_entities(store, job.store_id, job.token, entities, job.chunk, on_written=count)
        conform = await checks.all_conform()
    finally:
        checks.close()
        await store.close()
    _send(answers, HalfStaged(conform=conform))


ITEMS_PER_BEAT = 1_000

"""The audit log: decisions hand their records to a bounded queue; one task writes them out.

What happens when the sink is slow or down is the mode:

- ``block``: the decision waits for room in the queue (back-pressure); a failing sink is
  retried until it works, so callers slow down instead of losing records.
- ``deny``: the decision waits until its records are written; a full queue or a failed write
  makes the call fail with UNAVAILABLE (fail closed: no decision without its record).
- ``drop``: the decision never waits; records that find the queue full, or whose write fails,
  are dropped and counted in ``verdict_audit_records_total{result="dropped"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from verdict.audit.sinks import Sink
from verdict.errors import AuditUnavailableError
from verdict.telemetry import metrics

log = structlog.get_logger(__name__)
Record = Mapping[str, Any]
MAX_BATCH = 512  # records per sink write
RETRY_SECONDS = 0.5


class AuditMode(enum.Enum):
    """See the module docstring."""

    BLOCK = "block"
    DENY = "deny"
    DROP = "drop"


@dataclass
class _Pending:
    records: Sequence[Record]
    written: asyncio.Future[None] | None = field(default=None)
    # Deny mode: the caller stopped waiting and was refused. Its records must never be
    # presented as acknowledged: dropped if still queued, marked if already being written.
    abandoned: bool = False


class AuditLog:
    """Queue and writer for one sink; ``start`` it on the running loop, ``close`` drains it."""

    def __init__(self, sink: Sink, mode: AuditMode, queue_size: int, wait_seconds: float) -> None:
        self.sink = sink
        self.mode = mode
        self.wait_seconds = wait_seconds
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        # Records handed to the queue and not yet written, failed or dropped: what a close
        # that cannot finish the writing loses (counted and logged, never silently).
        self._unwritten = 0

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.get_running_loop().create_task(self._write_forever(), name="audit")

    async def record(self, records: Sequence[Record]) -> None:
        """Hand over one call's records (a batch's items together); see the mode for what this
        waits for and when it raises AuditUnavailableError."""
        if not records:
            return
        if self.mode is AuditMode.BLOCK:
            await self._queue.put(_Pending(records))
            self._unwritten += len(records)
        elif self.mode is AuditMode.DROP:
            try:
                self._queue.put_nowait(_Pending(records))
                self._unwritten += len(records)
            except asyncio.QueueFull:
                metrics.AUDIT_RECORDS.labels(result="dropped").inc(len(records))
        else:
            await self._record_or_refuse(records)
        metrics.AUDIT_QUEUE_DEPTH.set(self._queue.qsize())

    async def _record_or_refuse(self, records: Sequence[Record]) -> None:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A failure that lands after the caller stopped waiting must not be logged as unretrieved.
        written.add_done_callback(_retrieve)
        pending = _Pending(records, written)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            metrics.AUDIT_RECORDS.labels(result="failed").inc(len(records))
            raise AuditUnavailableError from None
        self._unwritten += len(records)
        try:
            await asyncio.wait_for(asyncio.shield(written), self.wait_seconds)
        except TimeoutError:
            if _acknowledged(written):
                return  # written as the wait ran out: acknowledged, so answered
            # The writer drops the records, or marks them if their write is under way: a
            # refused decision whose record was written later read as answered (round 20).
            pending.abandoned = True
            raise AuditUnavailableError from None
        except OSError:
            raise AuditUnavailableError from None
        except asyncio.CancelledError:
            # The call ended meanwhile (its deadline, a cancel): it is answered with no
            # decision, so its records must not read as answered either (attack round 22).
            if not _acknowledged(written):
                pending.abandoned = True
            raise

    async def close(self) -> None:
        """Write what is queued (within the wait), stop the writer, close the sink.

        Records still unwritten then (a slow or failing sink; in block and drop mode their
        decisions were answered) are lost: counted as dropped and logged as
        ``audit_records_lost``, so that the loss is never silent.
        """
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), self.wait_seconds)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._unwritten:
            metrics.AUDIT_RECORDS.labels(result="dropped").inc(self._unwritten)
            log.error("audit_records_lost", records=self._unwritten, reason="shutdown")
            self._unwritten = 0
        await self.sink.close()

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
                metrics.AUDIT_QUEUE_DEPTH.set(self._queue.qsize())

    async def _write(self, queued: list[_Pending]) -> None:
        batch = [pending for pending in queued if not pending.abandoned]
        refused = sum(len(pending.records) for pending in queued if pending.abandoned)
        if refused:  # their callers were refused while these waited in the queue
            metrics.AUDIT_RECORDS.labels(result="failed").inc(refused)
            self._unwritten -= refused
        records = [r for pending in batch for r in pending.records]
        if not records:
            return
        while True:
            before: tuple[int, str] | None = None
            try:
                # Inside: a rotation that fails (the file gone) is a failed write, never the
                # end of the writer task.
                self.sink.rotate_if_due()
                chainer = self.sink.chainer
                before = chainer.state()
                lines = [chainer.chain(record) for record in records]
                await self.sink.write(lines)
            except Exception as exc:  # any sink failure: the chain must not skip these lines
                if before is not None:
                    self.sink.write_failed(before)
                log.error("audit_write_failed", error_type=type(exc).__name__, records=len(records))
                if self.mode is AuditMode.BLOCK:
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                result = "dropped" if self.mode is AuditMode.DROP else "failed"
                metrics.AUDIT_RECORDS.labels(result=result).inc(len(records))
                self._unwritten -= len(records)
                _settle(batch, OSError("audit sink failed"))
                return
            self._unwritten -= len(records)
            if any(pending.abandoned for pending in batch):
                # A caller gave up while the lines were being written, and was refused: the
                # lines are stored, so the chain goes on in a new segment marking them as
                # never acknowledged, and every caller of the batch is refused alike.
                self.sink.written_unacknowledged(before)
                log.error("audit_write_too_slow", records=len(records))
                metrics.AUDIT_RECORDS.labels(result="failed").inc(len(records))
                _settle(batch, OSError("audit write outlasted the wait"))
                return
            metrics.AUDIT_RECORDS.labels(result="written").inc(len(records))
            _settle(batch, None)
            return


def _acknowledged(written: asyncio.Future[None]) -> bool:
    """Whether the writer has written the records (and said so)."""
    return written.done() and not written.cancelled() and written.exception() is None


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(batch: list[_Pending], error: OSError | None) -> None:
    for pending in batch:
        if pending.written is None or pending.written.done():
            continue
        if error is None:
            pending.written.set_result(None)
        else:
            pending.written.set_exception(error)

"""Log lines out of the server without ever waiting on the reader: a line is written at once
while the stream can take it, and otherwise queued for a writer thread; past a bounded backlog
lines are dropped, counted, and the count is logged once the stream drains.

Why: structlog wrote each line to stderr on the calling thread, the event loop's. When the
reader of stderr lags (a container runtime's log driver on a slow disk, a pipe nobody reads),
the pipe fills and the write blocks: every decision waited until the line got out (attack
round 20: decisions hung until their deadlines). Docker's ``mode=non-blocking`` log option
exists for the same reason.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import threading
import time
from collections import deque
from typing import Any, TextIO

# Lines (and their bytes) queued behind a stream that does not take them before new ones are
# dropped: a few reload failures can each be a long line (their diagnostics).
MAX_BACKLOG_LINES = 10_000
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
# A write of at most this many bytes to a pipe with room does not block (PIPE_BUF).
ATOMIC_BYTES = 4096
EXIT_FLUSH_SECONDS = 2.0


class LineWriter:
    """Writes whole lines to ``stream``'s descriptor: at once when it is writable and nothing
    is queued (the usual case: lines keep their order and are out when ``write`` returns),
    else through the queue."""

    def __init__(
        self,
        stream: TextIO,
        max_backlog: int = MAX_BACKLOG_LINES,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
    ) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._max_backlog = max_backlog
        self._max_backlog_bytes = max_backlog_bytes
        self._queued_bytes = 0
        self._queue: deque[bytes] = deque()
        self._busy = False  # the thread is writing lines it took from the queue
        self._dropped = 0
        self._lock = threading.Condition()
        self._thread = threading.Thread(target=self._drain, name="verdict-log-writer", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Lines dropped so far (the backlog was full)."""
        return self._dropped

    def write(self, line: str) -> None:
        """Write ``line`` (with its newline) now, or queue it; never waits for the reader."""
        data = line.encode("utf-8", "replace")
        with self._lock:
            if not self._queue and not self._busy and self._writable_now(len(data)):
                self._stream.flush()  # what print() left in Python's buffer goes first
                data = _write_now(self._fd, data)
                if not data:
                    return
                # A stderr in non-blocking mode refused the rest (EAGAIN): queued, in order.
            full = len(self._queue) >= self._max_backlog
            if full or self._queued_bytes + len(data) > self._max_backlog_bytes:
                self._dropped += 1
                _count_dropped()
                return
            self._queue.append(data)
            self._queued_bytes += len(data)
            self._lock.notify()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queue to be written; whether it was."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def _writable_now(self, size: int) -> bool:
        if size > ATOMIC_BYTES:
            return False
        try:
            return _writable(self._fd, 0)
        except (OSError, ValueError):
            return False

    def _drain(self) -> None:
        reported = 0
        while True:
            with self._lock:
                while not self._queue:
                    self._busy = False
                    self._lock.notify_all()  # flush() waits for this
                    self._lock.wait()
                batch = list(self._queue)
                self._queue.clear()
                self._queued_bytes = 0
                self._busy = True
                dropped = self._dropped
            if dropped > reported:
                batch.append(_dropped_line(dropped - reported))
                reported = dropped
            try:
                self._stream.flush()
                _write_waiting(self._fd, b"".join(batch))
            except (OSError, ValueError):  # the stream is gone: count what it did not take
                with self._lock:
                    self._dropped += len(batch)
                    reported = self._dropped  # no stream to report them on
                for _ in batch:
                    _count_dropped()


def _writable(fd: int, timeout_ms: int) -> bool:
    """Whether ``fd`` can take a write, waiting up to ``timeout_ms`` for it."""
    ready = select.poll()
    ready.register(fd, select.POLLOUT)
    return any(event & select.POLLOUT for _, event in ready.poll(timeout_ms))


def _write_now(fd: int, data: bytes) -> bytes:
    """Write what ``fd`` takes without waiting; the bytes it did not take (a descriptor in
    non-blocking mode says EAGAIN instead of waiting)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except BlockingIOError:
        pass
    return bytes(view)


def _write_waiting(fd: int, data: bytes) -> None:
    """Write all of ``data``, waiting for ``fd`` whenever it is full, blocking or not: a
    non-blocking stderr's EAGAIN dropped whole batches uncounted (attack round 22)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            _writable(fd, 1000)


def _dropped_line(count: int) -> bytes:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    line = {"count": count, "event": "log_lines_dropped", "level": "error", "timestamp": stamp}
    return (json.dumps(line) + "\n").encode()


def _count_dropped() -> None:
    from verdict.telemetry import metrics  # prometheus_client: only once a line is dropped

    metrics.LOG_LINES_DROPPED.inc()


class WriterLogger:
    """A structlog logger (as ``PrintLogger``) whose lines go through a ``LineWriter``."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        """Write one rendered event."""
        self._writer.write(message + "\n")

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class WriterLoggerFactory:
    """structlog's ``logger_factory``: one ``LineWriter`` for ``stream``, flushed (briefly)
    when the process exits."""

    def __init__(self, stream: TextIO) -> None:
        self.writer = LineWriter(stream)
        atexit.register(self.writer.flush, EXIT_FLUSH_SECONDS)

    def __call__(self, *args: Any) -> WriterLogger:
        return WriterLogger(self.writer)

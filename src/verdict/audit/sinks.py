"""Where audit lines go: a JSONL file with rotation, stdout, or a Redis stream.

A sink writes a batch of already chained lines and returns once they are written; it raises
OSError (or a redis error) when it cannot, and the audit log decides what that means.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from verdict.audit.chain import Chainer, line_hash
from verdict.audit.keys import AuditKey
from verdict.audit.verify import parse_record

TAIL_BYTES = 1 << 20  # read back from a file's end to find its last record (records are small)


def new_segment(prefix: str) -> str:
    """A segment id nobody else will use: ``prefix``, a UTC timestamp and a random part."""
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


class Sink(Protocol):
    """Writes chained audit lines."""

    chainer: Chainer

    async def write(self, lines: Sequence[str]) -> None:
        """Write ``lines`` in order; raise when they are not all written."""

    def rotate_if_due(self) -> None:
        """Start a new segment if the current one is full or old (before chaining more)."""

    def write_failed(self, state: tuple[int, str]) -> None:
        """``write`` raised for the lines chained since ``state``: rewind the chain over them
        if they are surely not stored, else go on in a new segment that says they may be."""

    def written_unacknowledged(self, state: tuple[int, str]) -> None:
        """The lines chained since ``state`` were written, but their decisions were refused
        (deny mode: the write outlasted the wait): go on in a new segment marking them as
        never acknowledged."""

    async def close(self) -> None:
        """Flush and release resources."""


class FileSink:
    """Appends lines to a JSONL file; past ``max_bytes`` or ``max_seconds`` the file is renamed
    ``<name>.<segment>.jsonl`` and a new file (and chain segment) starts.

    Written with ``os.write`` on the descriptor (no buffer of Python's): a batch is on disk
    whole or, when a write fails half way (a full disk), cut back to where it began. A
    buffered file kept a failed batch's bytes and wrote them with the next one, while the
    chain had been rewound: a refused decision appeared as answered, its ``seq`` repeated.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        max_seconds: float,
        fsync: bool,
        key: AuditKey | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = self._open()
        # A restart appends to the file: the new segment names the last record before it, so
        # that records cut from the end of the previous run's segment (mid-file) are found.
        self.chainer = Chainer(new_segment("file"), key, after=_last_record(self._fd))
        self._opened = time.monotonic()

    def _open(self) -> int:
        # O_APPEND: concurrent writers (never intended) could not overwrite each other.
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)  # read: the tail
        return os.open(self.path, flags, 0o640)

    def _start_file(self) -> None:
        fd = self._open()  # first: if it fails, the descriptor held is still a valid one
        os.close(self._fd)
        self._fd = fd
        # The new segment names where the one in the rotated (or moved) file ended.
        self.chainer = Chainer(new_segment("file"), self.key, after=self.chainer.last())
        self._opened = time.monotonic()

    def _still_ours(self) -> bool:
        """Whether ``path`` still names the file written to (not deleted, not renamed away by
        a tool outside Verdict, such as logrotate without copytruncate)."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        ours = os.fstat(self._fd)
        return (named.st_dev, named.st_ino) == (ours.st_dev, ours.st_ino)

    def rotate_if_due(self) -> None:
        """Rename the full or old file away and start a new segment in a fresh one; start one
        too when the file was deleted or moved away (records written to a file no longer in
        the folder were lost: the descriptor kept writing to it)."""
        if not self._still_ours():
            self._start_file()
            return
        size = os.fstat(self._fd).st_size
        old = time.monotonic() - self._opened > self.max_seconds
        if size == 0 or (size < self.max_bytes and not old):
            return
        rotated = self.path.with_name(f"{self.path.stem}.{self.chainer.segment}.jsonl")
        os.replace(self.path, rotated)
        self._start_file()

    async def write(self, lines: Sequence[str]) -> None:
        """Append the batch whole (and fsync when configured), or cut it back and raise."""
        data = "".join(f"{line}\n" for line in lines).encode("utf-8")
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, start)  # no partial batch: the chain is rewound over it
            raise

    def write_failed(self, state: tuple[int, str]) -> None:
        """The failed batch was cut back: the chain goes back to before it."""
        self.chainer.restore(state)

    def written_unacknowledged(self, state: tuple[int, str]) -> None:
        """A new segment in the same file, after the lines written, marking them."""
        after = self.chainer.last()
        self.chainer = self.chainer.successor(state, new_segment("file"), after=after)

    async def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


def _last_record(fd: int) -> dict[str, Any] | None:
    """``{segment, seq, hash}`` of the last record of the file open at ``fd`` (None: empty, or
    its last line is no record)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = max(0, size - TAIL_BYTES)
    tail = os.pread(fd, size - start, start).decode("utf-8", "replace")
    line = tail.rstrip("\n").rpartition("\n")[2]
    record = parse_record(line)
    if record is None:
        return None
    segment, seq = record.get("segment"), record.get("seq")
    if not isinstance(segment, str) or type(seq) is not int:
        return None
    return {"segment": segment, "seq": seq, "hash": line_hash(line)}


class StdoutSink:
    """Writes lines to standard output (a collector reads the container's stdout)."""

    def __init__(self, key: AuditKey | None = None) -> None:
        self.chainer = Chainer(new_segment("stdout"), key)

    def rotate_if_due(self) -> None:
        """One segment per process, and one after each failed write."""

    def write_failed(self, state: tuple[int, str]) -> None:
        """Part of the batch may have reached the reader: a new segment, marking it."""
        self.chainer = self.chainer.successor(state, new_segment("stdout"))

    def written_unacknowledged(self, state: tuple[int, str]) -> None:
        """A new segment, marking the batch."""
        self.chainer = self.chainer.successor(state, new_segment("stdout"))

    async def write(self, lines: Sequence[str]) -> None:
        """Write and flush."""
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        sys.stdout.flush()

    async def close(self) -> None:
        """Flush."""
        sys.stdout.flush()


class RedisStreamSink:
    """XADDs each line (field ``r``) to a Redis stream; each writer is one segment of it.

    ``max_length`` trims the stream approximately (central collection is expected to read
    it); 0 keeps everything.
    """

    def __init__(
        self, client: Any, stream: str, max_length: int, key: AuditKey | None = None
    ) -> None:
        self.client = client
        self.stream = stream
        self.max_length = max_length
        self.chainer = Chainer(new_segment("stream"), key)

    def rotate_if_due(self) -> None:
        """One segment per writer process, and one after each failed write."""

    def write_failed(self, state: tuple[int, str]) -> None:
        """An XADD whose call failed (a timeout, a lost connection) may still run when Redis
        resumes: a rewound chain would then hold it and repeat its ``seq``. A new segment,
        marking it as never acknowledged, instead."""
        self.chainer = self.chainer.successor(state, new_segment("stream"))

    def written_unacknowledged(self, state: tuple[int, str]) -> None:
        """A new segment, marking the batch."""
        self.chainer = self.chainer.successor(state, new_segment("stream"))

    async def write(self, lines: Sequence[str]) -> None:
        """Add the batch in one pipeline (in order; all or an error)."""
        pipe = self.client.pipeline(transaction=False)
        for line in lines:
            if self.max_length:
                pipe.xadd(self.stream, {"r": line}, maxlen=self.max_length, approximate=True)
            else:
                pipe.xadd(self.stream, {"r": line})
        await pipe.execute()

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

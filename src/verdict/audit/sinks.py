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

from verdict.audit.chain import Chainer


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

    async def close(self) -> None:
        """Flush and release resources."""


class FileSink:
    """Appends lines to a JSONL file; past ``max_bytes`` or ``max_seconds`` the file is renamed
    ``<name>.<segment>.jsonl`` and a new file (and chain segment) starts."""

    def __init__(self, path: Path, max_bytes: int, max_seconds: float, fsync: bool) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self.chainer = Chainer(new_segment("file"))
        self._file = self._open()
        self._opened = time.monotonic()

    def _open(self) -> Any:
        # O_APPEND: concurrent writers (never intended) could not overwrite each other.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        return os.fdopen(fd, "a", encoding="utf-8")

    def rotate_if_due(self) -> None:
        """Rename the full or old file away and start a new segment in a fresh one."""
        size = self._file.tell()
        old = time.monotonic() - self._opened > self.max_seconds
        if size == 0 or (size < self.max_bytes and not old):
            return
        self._file.close()
        rotated = self.path.with_name(f"{self.path.stem}.{self.chainer.segment}.jsonl")
        os.replace(self.path, rotated)
        self.chainer = Chainer(new_segment("file"))
        self._file = self._open()
        self._opened = time.monotonic()

    async def write(self, lines: Sequence[str]) -> None:
        """Append and flush (and fsync when configured) the batch."""
        self._file.write("".join(f"{line}\n" for line in lines))
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    async def close(self) -> None:
        """Close the file."""
        self._file.close()


class StdoutSink:
    """Writes lines to standard output (a collector reads the container's stdout)."""

    def __init__(self) -> None:
        self.chainer = Chainer(new_segment("stdout"))

    def rotate_if_due(self) -> None:
        """One segment per process."""

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

    def __init__(self, client: Any, stream: str, max_length: int) -> None:
        self.client = client
        self.stream = stream
        self.max_length = max_length
        self.chainer = Chainer(new_segment("stream"))

    def rotate_if_due(self) -> None:
        """One segment per writer process."""

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

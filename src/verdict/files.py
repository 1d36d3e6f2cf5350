"""Read configuration files safely: regular files only, bounded in size, UTF-8."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileReadError(Exception):
    """A file cannot be used; the message says why, without the file's content."""


def is_regular(path: Path) -> bool:
    """True when ``path`` is a regular file (symbolic links followed)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def read_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file; a FIFO, device or folder is refused without blocking."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise FileReadError(f"cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileReadError("not a regular file")
    with os.fdopen(fd, "rb") as file:
        data = file.read() if max_bytes is None else file.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise FileReadError(f"larger than the limit of {max_bytes} bytes")
    return data


def read_text(path: Path, max_bytes: int | None = None) -> str:
    """The UTF-8 text of a regular file (see ``read_bytes``)."""
    try:
        return read_bytes(path, max_bytes).decode("utf-8")
    except UnicodeDecodeError:
        raise FileReadError("file is not valid UTF-8") from None

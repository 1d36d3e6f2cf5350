"""Read configuration files safely: regular files only, bounded in size, UTF-8."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


class FileReadError(Exception):
    """A file cannot be used; the message says why, without the file's content."""


class FileAbsentError(FileReadError):
    """There is no file at the path (for callers where absent and unusable differ)."""


def is_regular(path: Path) -> bool:
    """True when ``path`` is a regular file (symbolic links followed)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


@dataclass
class _Pins:
    """What a pinned block has read: each file's bytes (or why it could not be read), each
    listing; later reads in the block get these, whatever the disk holds by then."""

    contents: dict[tuple[str, int | None], bytes | FileReadError] = field(default_factory=dict)
    listings: dict[str, list[Path]] = field(default_factory=dict)
    # Whether each path named something, as the block first saw it (see ``exists``).
    present: dict[str, bool] = field(default_factory=dict)


_PINNED: ContextVar[_Pins | None] = ContextVar("verdict_pinned_reads", default=None)
_CONFINED: ContextVar[tuple[str, ...]] = ContextVar("verdict_confined_reads", default=())
OUTSIDE_FOLDERS = "a link to a file outside the store folder, refused"
OUTSIDE_STORES = "the store folder is a link to a folder outside the stores folder, refused"


@contextmanager
def confined_reads(*real_folders: str) -> Iterator[None]:
    """Within the block, a file opened through this module must lie inside one of
    ``real_folders`` (real paths, from ``resolved_inside``: never resolved again here) once
    every symbolic link is resolved, or it is refused unread.

    A store file linked to a secret of the server's (``x.cedar -> /etc/verdict/audit.key``)
    was read, and Cedar's syntax error quoted its first token in the log and in
    ReloadPolicies' answer. The check is made on the open descriptor, so a link swapped after
    a check cannot slip through; and the folder is resolved once, by the caller that checked
    it (a store folder link flipped between a check and a second resolution confined the
    reads to a folder outside the stores folder: attack round 12)."""
    token = _CONFINED.set(tuple(real_folders))
    try:
        yield
    finally:
        _CONFINED.reset(token)


def resolved_inside(folder: Path) -> str:
    """The real path of ``folder`` (a store folder), FileReadError unless it lies inside its
    parent's (the stores folder's): a store folder linked elsewhere chose what its files may
    resolve to (``stores/evil -> ..``, attack round 11). ConfigMap mounts resolve inside."""
    real = os.path.realpath(folder)
    if not _below(real, os.path.realpath(folder.parent)):
        raise FileReadError(OUTSIDE_STORES)
    return real


def _below(real: str, folder: str) -> bool:
    """Whether the real path ``real`` lies below the real path ``folder``."""
    return real.startswith(folder.rstrip(os.sep) + os.sep)


def _check_confined(fd: int, path: Path) -> None:
    folders = _CONFINED.get()
    if not folders:
        return
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: the path's resolution (a swap between the two can slip by)
        real = os.path.realpath(path)
    if not any(real == folder or _below(real, folder) for folder in folders):
        raise FileReadError(OUTSIDE_FOLDERS)


@contextmanager
def pinned_reads() -> Iterator[None]:
    """Within the block, each file is read from disk once (and each pinned listing made once):
    a parse and a content hash of the same file see the same bytes even if an editor or a
    ConfigMap swap changes it in between (else A, B, A edits would hash as A, parse as B)."""
    token = _PINNED.set(_Pins())
    try:
        yield
    finally:
        _PINNED.reset(token)


def pinned_listing(key: str, list_files: Callable[[], list[Path]]) -> list[Path]:
    """``list_files()``, made once per pinned block and ``key``; every call outside a block."""
    pins = _PINNED.get()
    if pins is None:
        return list_files()
    if key not in pins.listings:
        pins.listings[key] = list_files()
    return pins.listings[key]


def exists(path: Path) -> bool:
    """Whether ``path`` names anything (a link counts, even dangling). Inside
    ``pinned_reads``, the block's first answer, which its reads keep to: a file absent then
    reads as absent for the rest of the block, and one read (or found) then is present.

    The load read a file's bytes through the pin but asked the disk whether it existed: a
    links file renamed away for an instant was left out of the parse while the version,
    hashed from the pinned bytes, still held it, and the store was served without its links
    (a forbid template's, ALLOW) under the version of the files with them (attack round 21)."""
    pins = _PINNED.get()
    if pins is None:
        return os.path.lexists(path)
    name = os.path.abspath(path)
    if name not in pins.present:
        pins.present[name] = os.path.lexists(path)
    return pins.present[name]


def read_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file; a FIFO, device or folder is refused without blocking.
    Inside ``pinned_reads``, the bytes the block first read (and absent if ``exists`` first
    found nothing there)."""
    pins = _PINNED.get()
    if pins is None:
        return _read_bytes(path, max_bytes)
    name = os.path.abspath(path)
    key = (name, max_bytes)
    if key not in pins.contents:
        try:
            if pins.present.get(name) is False:
                raise FileAbsentError("cannot read: No such file or directory")
            pins.contents[key] = _read_bytes(path, max_bytes)
            pins.present.setdefault(name, True)
        except FileAbsentError as exc:
            pins.present.setdefault(name, False)
            pins.contents[key] = exc
        except FileReadError as exc:
            pins.contents[key] = exc
    found = pins.contents[key]
    if isinstance(found, FileReadError):
        # Its own class again: an absent file is no version (""), an unusable one a version
        # naming why; as a plain FileReadError, a store without entities.json read as
        # unusable inside the reload's pinned reads and never reloaded (attack round 19).
        raise type(found)(str(found))
    return found


def _open_regular(path: Path, max_bytes: int | None) -> BinaryIO:
    """``path`` opened for reading if it is a regular file within ``max_bytes`` (checked on
    the open descriptor, so a file swapped after a check cannot slip through)."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer would otherwise wait forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileAbsentError("cannot read: No such file or directory") from None
    except OSError as exc:
        raise FileReadError(f"cannot read: {exc.strerror}") from None
    try:
        _check_confined(fd, path)
    except FileReadError:
        os.close(fd)
        raise
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise FileReadError("not a regular file")
    if max_bytes is not None and status.st_size > max_bytes:  # refused unread
        os.close(fd)
        raise _too_large(max_bytes)
    return os.fdopen(fd, "rb")


def _read_bytes(path: Path, max_bytes: int | None) -> bytes:
    with _open_regular(path, max_bytes) as file:  # bounded again: it may grow after the fstat
        data = file.read() if max_bytes is None else file.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data


def content_hash(path: Path, max_bytes: int) -> str:
    """The sha256 (hex) of a regular file's bytes, read in 1 MiB chunks; FileAbsentError when
    there is no such file, FileReadError when it is not a regular file or is (or grows)
    larger than ``max_bytes``: the same rules as ``read_bytes``, without holding the bytes."""
    digest = hashlib.sha256()
    seen = 0
    with _open_regular(path, max_bytes) as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            seen += len(chunk)
            if seen > max_bytes:
                raise _too_large(max_bytes)
            digest.update(chunk)
    return digest.hexdigest()


def _too_large(max_bytes: int) -> FileReadError:
    return FileReadError(f"larger than the limit of {_size(max_bytes)}")


def _size(count: int) -> str:
    """``count`` bytes for a message: "64 MiB" when it is whole MiB, else "4,000 bytes"."""
    mib = 1024 * 1024
    return f"{count // mib} MiB" if count >= mib and count % mib == 0 else f"{count:,} bytes"


def read_text(path: Path, max_bytes: int | None = None) -> str:
    """The UTF-8 text of a regular file (see ``read_bytes``)."""
    try:
        return read_bytes(path, max_bytes).decode("utf-8")
    except UnicodeDecodeError:
        raise FileReadError("file is not valid UTF-8") from None


EMPTY_STORE_FILE = (
    "empty file, refused: an in-place rewrite shows every file empty for an instant "
    "(to drop a file, delete it; replace store files by a rename)"
)


def read_store_text(path: Path, max_bytes: int) -> str:
    """``read_text`` of a policy store's file, refusing one of zero bytes.

    ``cp new.cedar guard.cedar`` and ``cat > guard.cedar`` truncate the file, then write it:
    a reload landing in between read an empty file, which is valid Cedar (no policies), and
    served the store without the file's forbids, though the old and the new file both hold
    them (attack round 8). An empty file is the one state every such rewrite passes through
    (files up to the writer's buffer, 128 KiB for cp, are then written by one call), and no
    store needs one, so it is refused and the last good version keeps serving."""
    text = read_text(path, max_bytes)
    if not text:
        raise FileReadError(EMPTY_STORE_FILE)
    return text

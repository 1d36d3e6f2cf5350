"""Which store files another process holds open for writing, asked of the kernel (Linux leases).

A reload that reads a file while someone rewrites it in place (`cat > guard.cedar`, a slow
copy) can read a prefix, and a prefix that ends at a statement is valid Cedar without the
forbids after it. Times cannot tell a writer paused mid-file from an edit (attack round 11);
the kernel can: a read lease (``F_SETLEASE``, ``F_RDLCK``) is granted only while no process
has the file open for writing. It is taken and given back at once: it is a question, not a
lock. A writer opening the file in that instant waits for the release, and the lease-break
signal (SIGIO, whose default action ends the process) must be ignored first: the server does
so at start (``ignore_lease_breaks``); without that, nothing is asked.

A lease needs the file's owner or CAP_LEASE, and a filesystem that grants them (not NFS):
where one is refused, the answer is "unknown" and the reload relies on the settle alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import stat
import threading
from collections.abc import Iterable
from pathlib import Path


def ignore_lease_breaks() -> bool:
    """Ignore SIGIO, so that a lease's break notice cannot end the process; whether it is
    ignored now (a thread other than the main one cannot change it)."""
    if signal.getsignal(signal.SIGIO) is signal.SIG_IGN:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGIO) is not signal.SIG_DFL:
        return False  # someone handles SIGIO on purpose: leave it to them, ask nothing
    signal.signal(signal.SIGIO, signal.SIG_IGN)
    return True


def open_for_writing(paths: Iterable[Path]) -> list[Path] | None:
    """The ``paths`` some process holds open for writing now; None when the kernel cannot be
    asked (SIGIO not ignored, leases refused on a file: not its owner, no CAP_LEASE, NFS).
    A path that vanished is not being written."""
    if signal.getsignal(signal.SIGIO) is not signal.SIG_IGN:
        return None
    busy: list[Path] = []
    for path in paths:
        held = _held_for_writing(path)
        if held is None:
            return None
        if held:
            busy.append(path)
    return busy


def _held_for_writing(path: Path) -> bool | None:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a FIFO or a device is not opened here (the load refuses it)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.fcntl(descriptor, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        # EAGAIN: open for writing somewhere (this process included); anything else (EACCES,
        # EINVAL on a filesystem without leases, a folder or FIFO) is "cannot tell".
        return True if exc.errno == errno.EAGAIN else None
    else:
        with contextlib.suppress(OSError):
            fcntl.fcntl(descriptor, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(descriptor)

"""Bulk allocation without the cyclic garbage collector's repeated full scans, and bulk data
that a short-lived command leaves to the end of its process instead of freeing it piece by piece."""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_paused = 0  # blocks inside collector_paused now, in any thread
_restore = False  # whether the first of them found the collector on


@contextmanager
def collector_paused(*, freeze: bool = True) -> Iterator[None]:
    """Pause the cyclic collector while a block builds many long-lived objects; with
    ``freeze``, move what survives it to the permanent generation afterwards.

    Parsing a large JSON document allocates millions of containers, none of them garbage:
    each allocation threshold crossed triggers a collection, and the older generations are
    scanned again and again as they grow (a 300,000-entity file parsed at half speed; in a
    server, each full scan holds the GIL, and decisions wait for it). Freezing spares later
    collections the survivors; a server does not freeze (it would also freeze its requests in
    flight, whose cycles would then never be collected). Reference counting still frees
    everything the block did not keep. The collector is off while any thread is inside such a
    block and back on when the last one leaves, if it was on when the first one came in.
    """
    global _paused, _restore
    with _lock:
        if _paused == 0:
            _restore = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _lock:
            _paused -= 1
            if freeze:
                gc.freeze()
            if _paused == 0 and _restore:
                gc.enable()


_kept: list[object] = []


def keep_until_exit(*objects: object) -> None:
    """Hold ``objects`` until the process ends: ``exit_if_kept`` then ends it without
    freeing them one object at a time (a 300,000-entity load's: a quarter of a second, with
    both cores idle but one). Anywhere else they are freed as the interpreter ends."""
    _kept.extend(objects)


def exit_if_kept(code: int) -> None:
    """If bulk data was kept, end the process now with ``code``: its output flushed, nothing
    else of the interpreter's shutdown run (for a command that has ended its children and
    threads and has no atexit work of its own). Returns when nothing was kept."""
    if not _kept:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

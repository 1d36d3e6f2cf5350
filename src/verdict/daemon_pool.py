"""Threads for computation (and reads) a stop may abandon: they never hold the process's exit."""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
_Work = tuple[Future[Any], Callable[[], Any]]


class DaemonPool:
    """A fixed set of daemon threads taking work from one queue.

    Why not asyncio's default executor: its threads are joined when the event loop closes and
    again when the interpreter exits, and a cancelled call does not stop its thread. A write
    whose multi-megabyte request was still being parsed when the stop cut it held the exit for
    seconds past ``shutdown_grace_seconds`` (7.7 s with a 1 s grace for two 3.9 MB writes).
    Work given here computes and returns, at most reading files (a policy reload), never
    writing a file, socket or store, so abandoning it at the exit loses nothing.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._workers = workers
        self._name = name
        self._queue: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    async def run(self, function: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` on one of the threads, awaited on the running loop."""
        future: Future[T] = Future()
        self._start()
        self._queue.put((future, functools.partial(function, *args, **kwargs)))
        return await asyncio.wrap_future(future)

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self._workers:
                number = len(self._threads)
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{number}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        while True:
            future, call = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue  # its caller was cancelled while it waited in the queue
            try:
                result = call()
            except BaseException as exc:  # handed to the awaiting caller, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)

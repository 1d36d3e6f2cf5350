"""`verdict serve --workers N`: N worker processes on one port, and the process that minds them.

Each worker (verdict.worker) is a whole server: its own event loop, policies, entity store and
Redis connections. They bind the port (and the health port) with SO_REUSEPORT, so the kernel
spreads connections over them. The supervisor starts worker 0 first, so that a broken policy
store, a port in use or any other startup error is reported once and stops everything (exit 2,
as a single process would), and so that a port 0 becomes one real port for all. It forwards
SIGTERM/SIGINT to every worker and exits 0 when all drained. A worker that dies on its own is
restarted after a backoff; past ``worker_restarts`` restarts in RESTART_WINDOW seconds the
supervisor stops the rest and exits 1, leaving the next restart to the orchestrator. Workers die
with the supervisor (verdict.worker). With ``metrics_listen`` the supervisor serves /metrics,
summed over the workers (prometheus_client's multiprocess mode in a private temporary folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, multiprocess

from verdict import early_signals, event_loop
from verdict.app import WRITES_NEED_REDIS, metrics_address
from verdict.config import Settings
from verdict.listeners import bind_problem, listen_message
from verdict.supervisor_reloads import ReloadRelay
from verdict.telemetry.exposition import multiprocess_registry, start_metrics_server
from verdict.worker_link import MAX_LINE_BYTES, json_line

log = structlog.get_logger(__name__)
EXIT_ERROR, EXIT_FAILED = 2, 1
RESTART_WINDOW = 60.0  # seconds over which worker_restarts are counted
START_ATTEMPTS = 3  # per worker at startup, for workers stopped or killed before serving (_start)
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0  # seconds before a restart, doubling per recent restart
KILL_MARGIN = 15.0  # seconds past the shutdown grace before a worker that still runs is killed


def with_port(listen: str, port: int | None) -> str:
    """``listen`` with port 0 replaced by the port the first worker was given."""
    host, _, given = listen.rpartition(":")
    return f"{host}:{port}" if given == "0" and port else listen


class StartFailed(Exception):
    """`verdict serve` cannot start: ``message`` (lines) is what a single process would have
    said, as ``error: ...`` lines, and ``code`` its exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class WorkerFailed(Exception):
    """A worker exited before it served; ``code`` is the supervisor's exit code for it (1 if it
    was stopped or killed), ``exit_code`` the worker's own (negative: killed by that signal),
    ``message`` what it said was wrong (its stores, its settings, its port), if it said."""

    def __init__(self, index: int, code: int, message: str | None = None) -> None:
        self.index = index
        self.exit_code = code
        self.message = message
        # Exit 0 before serving is a stop it was sent (SIGTERM/SIGINT, kept while it started);
        # a negative code a kill (SIGKILL, the OOM killer): neither is its settings or stores.
        self.interrupted = code <= 0
        self.code = code if code > 0 else EXIT_FAILED
        super().__init__(f"worker {index} exited with {code} before serving")


@dataclass
class Worker:
    """A started worker process and the supervisor's end of its socket."""

    index: int
    process: asyncio.subprocess.Process
    channel: asyncio.StreamWriter | None = None
    ready: bool = False

    def stopped_cleanly(self) -> bool:
        """Exited 0. No signal the supervisor forwards kills a worker at any point of its start
        (held from the fork, then kept: early_signals), so dying of one is not clean either."""
        return self.process.returncode == 0


class Supervisor:
    """Starts, watches, restarts and stops the workers (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        env: dict[str, str],
        registry: CollectorRegistry | None = None,
        *,
        metrics: str | None = None,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self._settings = settings.model_copy(update={"workers": count, "metrics_listen": None})
        # Where this supervisor serves /metrics (the workers' sums), for the start events.
        self._metrics = metrics
        self._names = dict(names or {})  # listen fields -> the flags that set them
        self.failure: str | None = None  # what a worker that could not start said
        # The supervisor's own metrics, next to the workers' sums on its /metrics.
        registry = CollectorRegistry() if registry is None else registry
        self._ready_workers = Gauge(
            "verdict_workers_ready", "Worker processes serving now", registry=registry
        )
        self._restarted = Counter(
            "verdict_worker_restarts", "Workers restarted after they died", registry=registry
        )
        self._count = count
        self._env = env
        self._workers: dict[int, Worker] = {}
        self._stopping = asyncio.Event()
        self._signal = signal.SIGTERM
        self._restarts: deque[float] = deque()
        self._failed = False
        self._relay = ReloadRelay(lambda: self._workers, self._hangup)
        self._stop_level = 0  # the stops told to workers: 1 stop, 2 cut the drain short
        self._listeners: set[asyncio.Task[None]] = set()

    async def run(self) -> int:
        """Serve until a signal (exit 0 when every worker drained) or a failure (non-zero)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload_all)
        starting = asyncio.create_task(self._start_all())
        stopped = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal during startup: stop what started
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, WorkerFailed):
                await starting
            await self._shutdown()
        elif (failure := starting.exception()) is not None:
            stopped.cancel()
            await self._shutdown()
            if isinstance(failure, WorkerFailed):
                if failure.message is not None:  # said as a single process says it
                    self.failure = failure.message
                else:
                    log.error(
                        "worker_failed_to_start", worker=failure.index, exit_code=failure.code
                    )
                return failure.code
            raise failure
        else:
            keepers = [asyncio.create_task(self._keep(i)) for i in range(self._count)]
            await stopped
            await self._shutdown()
            await asyncio.gather(*keepers)
        return EXIT_FAILED if self._failed else 0

    def _reload_all(self) -> None:
        """SIGHUP: every worker re-reads its policy stores (each also watches the files).
        Starting workers too: a SIGHUP before one serves is kept, and it reloads once it
        serves (early_signals), since its load may already have read the files."""
        for worker in self._workers.values():
            signal_worker(worker.process, signal.SIGHUP)

    def _hangup(self, index: int) -> None:
        if (worker := self._workers.get(index)) is not None:
            signal_worker(worker.process, signal.SIGHUP)

    def _stop(self, sig: int) -> None:
        if self._stopping.is_set():  # a second signal: each worker cuts its drain short
            self._stop_level = 2
            for worker in self._workers.values():
                tell_stop(worker, 2, sig)
            return
        self._signal = signal.Signals(sig)
        log.info("shutdown_started", signal=signal.Signals(sig).name)
        self._stopping.set()

    async def _start_all(self) -> None:
        """Worker 0 alone, then the rest at once on the port it bound."""
        first = await self._start(0)
        # Logged once worker 0 serves: a start that fails says only what a single process
        # would say (its stores, a port), not events of a supervisor that never served.
        log.info(
            "supervisor_started",
            workers=self._count,
            pid=os.getpid(),
            metrics_port=int(self._metrics.rpartition(":")[2]) if self._metrics else None,
            metrics=self._metrics,
        )
        self._settings = self._settings.model_copy(
            update={
                "listen": with_port(self._settings.listen, first["port"]),
                "health_listen": self._settings.health_listen
                and with_port(self._settings.health_listen, first["health_port"]),
            }
        )
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the others' waits
                for index in range(1, self._count):
                    group.create_task(self._start(index))
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None
        log.info("workers_started", workers=self._count, listen=self._settings.listen)
        if self._settings.redis_url is None:
            log.warning("entity_writes_refused", detail=WRITES_NEED_REDIS, workers=self._count)

    async def _start(self, index: int) -> dict[str, Any]:
        """``_spawn`` at startup, again (up to START_ATTEMPTS times) for a worker stopped or
        killed before it served: a stray SIGTERM to one worker's pid (it exits 0) or a kill
        (SIGKILL, the OOM killer) says nothing about the settings, and must not fail the whole
        start. The supervisor's own stop is not retried, and a worker that exits with an error
        (its stores, its settings) fails the start at once. A SIGHUP, which killed a worker
        still importing and was what this retry was first for, no longer ends one: it is kept
        (early_signals)."""
        attempt = 1
        while True:
            try:
                return await self._spawn(index)
            except WorkerFailed as failure:
                if not failure.interrupted or attempt >= START_ATTEMPTS or self._stopping.is_set():
                    raise
                log.warning(
                    "worker_interrupted_while_starting",
                    worker=index,
                    attempt=attempt,
                    exit_code=failure.exit_code,
                )
                attempt += 1

    async def _spawn(self, index: int) -> dict[str, Any]:
        """Start worker ``index`` and wait until it serves; its ready line, or WorkerFailed."""
        ours, theirs = socket.socketpair()
        try:
            # The worker starts with the stop and reload signals blocked, until its entry
            # point keeps them: one sent while its interpreter starts is delivered then.
            with early_signals.held_by_children():
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "verdict.worker",
                    str(theirs.fileno()),
                    str(os.getpid()),
                    pass_fds=(theirs.fileno(),),
                    env=self._env,
                    stdin=asyncio.subprocess.DEVNULL,
                )
        finally:
            theirs.close()
        worker = self._workers[index] = Worker(index, process)
        if self._stopping.is_set():
            # The stop began while this worker was being started (a restart's spawn): the
            # stop's list of workers to signal and wait for was made without it, and it would
            # serve on while the supervisor waited for it for good.
            signal_worker(process, self._signal)
        reader, writer = await asyncio.open_connection(sock=ours, limit=MAX_LINE_BYTES)
        worker.channel = writer
        order = {
            "index": index,
            "settings": self._settings.model_dump(mode="json"),
            "names": self._names,
            "metrics": self._metrics,
        }
        try:
            writer.write(json_line(order))
            if self._stop_level:  # a restart while stopping: its level, not only the signal
                writer.write(stop_line(self._stop_level))
            line = await reader.readline()
        except (BrokenPipeError, ConnectionResetError):
            line = b""  # it died before reading its order (a signal while it started)
        if not line:
            raise WorkerFailed(index, await process.wait())
        ready: dict[str, Any] = json.loads(line)
        if "error" in ready:  # it could not start, and said why (worker_server.refuse)
            raise WorkerFailed(index, await process.wait(), str(ready["error"]))
        listener = asyncio.create_task(self._relay.listen(worker, reader))
        self._listeners.add(listener)
        listener.add_done_callback(self._listeners.discard)
        worker.ready = True
        self._ready_workers.inc()
        log.info("worker_ready", worker=index, pid=process.pid, port=ready["port"])
        return ready

    async def _keep(self, index: int) -> None:
        """Restart worker ``index`` whenever it exits on its own, until stopping."""
        while True:
            worker = self._workers[index]
            code = await worker.process.wait()
            if worker.channel is not None:
                worker.channel.close()
            if worker.ready:
                self._ready_workers.dec()
            self._forget(worker.process.pid)
            if self._stopping.is_set():
                return
            log.error("worker_exited", worker=index, pid=worker.process.pid, exit_code=code)
            now = time.monotonic()
            while self._restarts and now - self._restarts[0] > RESTART_WINDOW:
                self._restarts.popleft()
            if len(self._restarts) >= self._settings.worker_restarts:
                log.error("worker_restarts_exhausted", restarts=len(self._restarts))
                self._failed = True
                self._stopping.set()
                return
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** len(self._restarts))
            self._restarts.append(now)
            self._restarted.inc()
            log.warning("worker_restarting", worker=index, backoff_seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                return
            try:
                await self._spawn(index)
            except WorkerFailed as failure:  # counted as the next exit in this loop
                if failure.message is not None:
                    log.error(
                        "worker_failed_to_start",
                        worker=index,
                        exit_code=failure.code,
                        detail=failure.message,
                    )

    def _forget(self, pid: int) -> None:
        directory = self._env.get("PROMETHEUS_MULTIPROC_DIR")
        if directory is not None:  # its counters stay in the sums; live gauges would not
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]

    async def _shutdown(self) -> None:
        """Forward the signal to every worker and wait for all of them to drain; kill those
        still running KILL_MARGIN seconds past the drain and the grace (and exit 1)."""
        self._stopping.set()
        workers = [w for w in self._workers.values() if w.process.returncode is None]
        processes = [w.process for w in workers]
        self._stop_level = max(self._stop_level, 1)
        for worker in workers:
            tell_stop(worker, self._stop_level, self._signal)
        waiting = [asyncio.create_task(p.wait()) for p in processes]
        if not waiting:
            return
        settings = self._settings
        _, late = await asyncio.wait(
            waiting,
            timeout=settings.shutdown_drain_seconds + settings.shutdown_grace_seconds + KILL_MARGIN,
        )
        for process in processes:
            if process.returncode is None:
                log.error("worker_killed", pid=process.pid)
                signal_worker(process, signal.SIGKILL)
        await asyncio.gather(*late)
        codes = [p.returncode for p in processes]
        if late or not all(w.stopped_cleanly() for w in workers):
            self._failed = True
        log.info("shutdown_finished", exit_codes=codes)


def tell_stop(worker: Worker, level: int, sig: int) -> None:
    """The ``level``-th stop (1: stop, 2: cut the drain short) to a worker, on its socket:
    there the two stay two, and a stop that also reached it directly (a SIGTERM to the
    process group) is not counted twice. A worker still starting gets ``sig`` too (kept until
    it serves, early_signals; it reads its socket once serving), and so does one whose
    socket is gone."""
    channel = worker.channel
    if channel is not None and not channel.is_closing():
        channel.write(stop_line(level))
        if worker.ready:
            return
    signal_worker(worker.process, sig)


def stop_line(level: int) -> bytes:
    """The supervisor's ``level``-th stop as a line of the worker's socket (worker_link)."""
    return json_line({"op": "stop", "id": 0, "level": level})


def signal_worker(process: asyncio.subprocess.Process, sig: int) -> None:
    """Send ``sig`` to a worker that has not been seen to exit.

    Not ``process.send_signal``: subprocess.Popen.send_signal polls first (waitpid, WNOHANG),
    which reaps a worker that has just exited behind the back of asyncio's child watcher; the
    watcher then finds no child and reports exit 255 for a worker that exited 0 (a second
    SIGTERM forwarded in the last milliseconds of a clean stop turned exit 0 into exit 1).
    Until the watcher reaps it, an exited worker stays a zombie that keeps its pid; after, the
    returncode is set within one loop turn (pids are not reused that fast).
    """
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)


def supervise(settings: Settings, count: int, names: Mapping[str, str]) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; the exit code of `verdict serve`, or
    StartFailed when it cannot start. The caller has checked the listen addresses
    (verdict.listeners); ``names`` maps their fields to the flags that set them."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    metrics_dir, metrics_server, registry = None, None, None
    try:
        if settings.metrics_listen is not None:
            # Set in the workers' environment before they import prometheus_client.
            metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
                prefix="verdict-metrics-"
            )
            try:
                registry = multiprocess_registry(metrics_dir)
                metrics_server = start_metrics_server(settings.metrics_listen, registry)
            except OSError as exc:  # taken since the caller's check
                named = names.get("metrics_listen", "VERDICT_METRICS_LISTEN")
                message = listen_message(settings.metrics_listen, bind_problem(exc), named)
                raise StartFailed(message) from None
        supervisor = Supervisor(
            settings,
            count,
            env,
            registry,
            metrics=metrics_address(settings.metrics_listen, metrics_server),
            names=names,
        )
        # asyncio's loop (it forks the workers, keeping the signal mask that
        # early_signals.held_by_children sets for them: libuv, under uvloop, clears it); once
        # run() is over the stop signals stay ignored, so the cleanup below runs whatever
        # arrives.
        code = event_loop.run(supervisor.run(), "asyncio")
        if supervisor.failure is not None:
            raise StartFailed(supervisor.failure, code)
        return code
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)

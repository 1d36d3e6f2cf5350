"""The callers file and its JWKS as one unit, re-read, checked and swapped when either changes.

Security engineers add a caller, or the identity provider rotates its signing keys: neither may
need a restart. A changed file is parsed off the event loop; if it is broken (bad TOML, unknown
key, a JWKS that does not parse) the last good rules keep serving and the error is logged with
file:line and counted; the next good edit is picked up. Every call reads one ``EdgeRules``
object, so identity and grants of one call always come from the same version.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from verdict.errors import ConfigError
from verdict.telemetry.metrics import CONFIG_RELOADS
from verdict.transport.callers import Callers, load_callers
from verdict.transport.identity import Authenticator, JwtVerifier

log = structlog.get_logger(__name__)
_Stamp = tuple[tuple[int, int, int, int] | None, ...]


@dataclass(frozen=True)
class EdgeRules:
    """Who the callers are (tokens, JWT keys) and what each may call."""

    callers: Callers
    authenticator: Authenticator


def load_edge_rules(callers_file: Path) -> EdgeRules:
    """Read the callers file and the JWKS it names; ConfigError (file:line) on any problem."""
    return _read(callers_file).rules()


@dataclass(frozen=True)
class _Reading:
    """One attempt to read the rules: what was read (or why not), and each file's stamp taken
    just before it was read."""

    paths: tuple[Path, ...]
    stamp: _Stamp
    result: EdgeRules | ConfigError

    def rules(self) -> EdgeRules:
        if isinstance(self.result, ConfigError):
            raise self.result
        return self.result


def _read(callers_file: Path) -> _Reading:
    """Stamp each file, then read it. An edit landing after its stamp changes the stamp, so it
    is read at the next check; stamping after reading would take it for what was read."""
    paths: tuple[Path, ...] = (callers_file,)
    stamp = _stamp(paths)
    try:
        callers = load_callers(callers_file)
        if callers.jwt is None:
            return _Reading(paths, stamp, EdgeRules(callers, Authenticator(callers.tokens, None)))
        paths, stamp = (*paths, callers.jwt.jwks_file), stamp + _stamp((callers.jwt.jwks_file,))
        verifier = JwtVerifier.load(callers.jwt)
    except ConfigError as exc:
        return _Reading(paths, stamp, exc)
    return _Reading(paths, stamp, EdgeRules(callers, Authenticator(callers.tokens, verifier)))


def _stamp(paths: tuple[Path, ...]) -> _Stamp:
    """Identity of each file's current content: inode, device, size, mtime (None if missing).

    The inode catches an atomic rename and a Kubernetes ConfigMap ``..data`` symlink swap, both
    of which can keep size and mtime.
    """
    stamps: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            s = os.stat(path)
        except OSError:
            stamps.append(None)
            continue
        stamps.append((s.st_ino, s.st_dev, s.st_size, s.st_mtime_ns))
    return tuple(stamps)


class ReloadingEdgeRules:
    """Holds the current EdgeRules and replaces them when the files change on disk."""

    def __init__(self, callers_file: Path, interval: float) -> None:
        self.callers_file = callers_file
        self.interval = interval
        reading = _read(callers_file)
        self.current = reading.rules()  # ConfigError at start is fatal
        self.reloads = 0
        self._last = reading  # the last attempt: a good one, or a broken edit to wait out
        self._task: asyncio.Task[None] | None = None
        # Called after each swap: open health Watch streams ask again what they may show.
        self.on_swap: Callable[[], None] | None = None

    def start(self) -> None:
        """Check the files every ``interval`` seconds in the background."""
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="edge-rules")

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """Reload if a file changed since the last attempt; True if the rules were swapped.

        The files watched are those of the last attempt, failed or not: a callers file that
        names a JWKS not written yet is retried once that JWKS appears.
        """
        if _stamp(self._last.paths) == self._last.stamp:
            return False
        reading = await asyncio.to_thread(_read, self.callers_file)
        self._last = reading
        if isinstance(reading.result, ConfigError):
            # Keep the last good rules; try again once the files change again.
            CONFIG_RELOADS.labels(file="callers", result="error").inc()
            problems = [str(d) for d in reading.result.diagnostics]
            log.error("callers_reload_failed", problems=problems)
            return False
        self.current = reading.result
        self.reloads += 1
        if self.on_swap is not None:
            self.on_swap()
        CONFIG_RELOADS.labels(file="callers", result="ok").inc()
        log.info("callers_reloaded", callers_file=str(self.callers_file))
        return True

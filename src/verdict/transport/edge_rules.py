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

    def files(self, callers_file: Path) -> tuple[Path, ...]:
        """The files these rules were read from: the callers file, then the JWKS if any."""
        jwt = self.callers.jwt
        return (callers_file,) if jwt is None else (callers_file, jwt.jwks_file)


def load_edge_rules(callers_file: Path) -> EdgeRules:
    """Read the callers file and the JWKS it names; ConfigError (file:line) on any problem."""
    callers = load_callers(callers_file)
    verifier = JwtVerifier.load(callers.jwt) if callers.jwt is not None else None
    return EdgeRules(callers, Authenticator(callers.tokens, verifier))


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
        self.current = load_edge_rules(callers_file)  # ConfigError at start is fatal
        self.reloads = 0
        self._stamp = _stamp(self.current.files(callers_file))
        self._failed: _Stamp | None = None
        self._task: asyncio.Task[None] | None = None

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
        """Reload if a file changed since the last load (or last failure); True if swapped."""
        paths = self.current.files(self.callers_file)
        stamp = _stamp(paths)
        if stamp in (self._stamp, self._failed):
            return False
        try:
            rules = await asyncio.to_thread(load_edge_rules, self.callers_file)
        except ConfigError as exc:
            # Keep the last good rules; try again once the files change again.
            self._failed = stamp
            CONFIG_RELOADS.labels(file="callers", result="error").inc()
            log.error("callers_reload_failed", problems=[str(d) for d in exc.diagnostics])
            return False
        self.current = rules
        # The stamp of what was read: a JWKS path the new file names is included from now on.
        self._stamp, self._failed = _stamp(rules.files(self.callers_file)), None
        self.reloads += 1
        CONFIG_RELOADS.labels(file="callers", result="ok").inc()
        log.info("callers_reloaded", callers_file=str(self.callers_file))
        return True

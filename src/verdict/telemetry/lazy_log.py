"""A structlog logger that imports structlog on its first use.

Modules that a short command imports but that rarely log (the Redis store: `verdict entities
load`) take their logger from here: importing structlog costs ~0.1 s (it brings rich's
tracebacks and pygments), a tenth of a large load's single-core start.
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """``structlog.get_logger(name)``, made when an attribute is first asked for."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attribute: str) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attribute)


def get_logger(name: str) -> Any:
    """A logger for module ``name`` that imports structlog only when it is used."""
    return LazyLogger(name)

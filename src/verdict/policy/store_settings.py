"""Read a policy store's ``store.toml`` into StoreSettings, with located errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from verdict.errors import Diagnostic
from verdict.policy.snapshot import ErrorMode, StoreSettings, ValidationMode

SETTINGS_FILE = "store.toml"
E = TypeVar("E", ValidationMode, ErrorMode)
_KNOWN = {"validation": ValidationMode, "on_evaluation_error": ErrorMode}


def read_store_settings(
    root: Path, has_schema: bool, diagnostics: list[Diagnostic]
) -> StoreSettings:
    """Settings of the store at ``root``; problems are appended to ``diagnostics``."""
    path = root / SETTINGS_FILE
    raw: dict[str, object] = {}
    name = f"{root.name}/{SETTINGS_FILE}"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line = getattr(exc, "lineno", 1) or 1
            diagnostics.append(Diagnostic(name, line, f"invalid TOML: {exc}"))
            raw = {}
        for key in sorted(set(raw) - set(_KNOWN)):
            diagnostics.append(
                Diagnostic(
                    name, _line_of(text, key), f"unknown setting {key!r}; known: {sorted(_KNOWN)}"
                )
            )
    validation = _choice(
        raw,
        "validation",
        ValidationMode,
        ValidationMode.STRICT if has_schema else ValidationMode.OFF,
        name,
        path,
        diagnostics,
    )
    if validation is ValidationMode.STRICT and not has_schema:
        diagnostics.append(
            Diagnostic(
                name,
                _line_of(_read(path), "validation"),
                'validation = "strict" needs a schema file',
            )
        )
    errors = _choice(raw, "on_evaluation_error", ErrorMode, ErrorMode.DENY, name, path, diagnostics)
    return StoreSettings(validation=validation, on_evaluation_error=errors)


def _choice(
    raw: dict[str, object],
    key: str,
    enum: type[E],
    default: E,
    name: str,
    path: Path,
    diagnostics: list[Diagnostic],
) -> E:
    if key not in raw:
        return default
    try:
        return enum(raw[key])
    except ValueError:
        allowed = " | ".join(f'"{m.value}"' for m in enum)
        diagnostics.append(Diagnostic(name, _line_of(_read(path), key), f"{key} must be {allowed}"))
        return default


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(key):
            return number
    return 1

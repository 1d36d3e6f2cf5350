"""Read a policy store's ``store.toml`` into StoreSettings, with located errors."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from verdict.errors import Diagnostic
from verdict.files import FileReadError, exists, read_store_text
from verdict.policy.file_limits import MAX_POLICY_FILE_BYTES
from verdict.policy.snapshot import EntitiesSource, ErrorMode, StoreSettings, ValidationMode

SETTINGS_FILE = "store.toml"
E = TypeVar("E", ValidationMode, ErrorMode, EntitiesSource)
_KNOWN = {
    "validation",
    "on_evaluation_error",
    "request_entity_types",
    "entities_source",
    "audit_context",
}
_Problem = Callable[[str, str], None]  # report(key, message) at the key's line
_TYPE_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*(::[_a-zA-Z][_a-zA-Z0-9]*)*")


def is_action_type(type_name: str) -> bool:
    """Whether a type is an action type: Cedar names every action type ``[<ns>::]Action``."""
    return type_name == "Action" or type_name.endswith("::Action")


def read_store_settings(
    root: Path, has_schema: bool, diagnostics: list[Diagnostic], *, has_entities: bool = False
) -> StoreSettings:
    """Settings of the store at ``root``; problems are appended to ``diagnostics``.

    ``has_entities``: the store has an entities.json, so by default only ``verdict entities
    load`` may declare its Redis data complete (a write after data loss must not).
    """
    path = root / SETTINGS_FILE
    name = f"{root.name}/{SETTINGS_FILE}"
    text = ""
    if exists(path):  # absent: the defaults; present but unreadable: a problem, not defaults
        try:  # through verdict.files: a pinned load reads the settings it hashes
            text = read_store_text(path, MAX_POLICY_FILE_BYTES)
        except FileReadError as exc:
            diagnostics.append(Diagnostic(name, 0, str(exc)))
    raw: dict[str, object] = {}
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", 1) or 1
        diagnostics.append(Diagnostic(name, line, f"invalid TOML: {exc}"))
    except RecursionError:  # tomllib recurses per nested array (attack round 19: 600 deep)
        diagnostics.append(Diagnostic(name, 1, "invalid TOML: nested too deeply"))
    for key in sorted(set(raw) - _KNOWN):
        diagnostics.append(
            Diagnostic(
                name, _line_of(text, key), f"unknown setting {key!r}; known: {sorted(_KNOWN)}"
            )
        )

    def problem(key: str, message: str) -> None:
        diagnostics.append(Diagnostic(name, _line_of(text, key), message))

    default = ValidationMode.STRICT if has_schema else ValidationMode.OFF
    validation = _choice(raw, "validation", default, problem)
    if validation is ValidationMode.STRICT and not has_schema:
        problem("validation", 'validation = "strict" needs a schema file')
    errors = _choice(raw, "on_evaluation_error", ErrorMode.DENY, problem)
    if errors is ErrorMode.SKIP and not (has_schema and validation is ValidationMode.STRICT):
        # Without a validated schema a caller can make a forbid error on purpose (a string
        # where a number is compared) and "skip" would then drop the forbid: refuse the mix.
        problem(
            "on_evaluation_error",
            'on_evaluation_error = "skip" needs a schema and validation = "strict"',
        )
    inline = _type_list(raw, "request_entity_types", problem)
    source = EntitiesSource.LOAD if has_entities else EntitiesSource.WRITES
    source = _choice(raw, "entities_source", source, problem)
    audit_context = _names(raw, "audit_context", problem)
    return StoreSettings(validation, errors, inline, source, audit_context)


def _names(raw: dict[str, object], key: str, problem: _Problem) -> frozenset[str]:
    """A list of context attribute names (which the audit log may record)."""
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problem(key, f"{key} must be a list of context attribute names")
        return frozenset()
    return frozenset(value)


def _choice(raw: dict[str, object], key: str, default: E, problem: _Problem) -> E:
    if key not in raw:
        return default
    enum = type(default)
    try:
        return enum(raw[key])
    except ValueError:
        allowed = " | ".join(f'"{m.value}"' for m in enum)
        problem(key, f"{key} must be {allowed}")
        return default


def _type_list(raw: dict[str, object], key: str, problem: _Problem) -> frozenset[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problem(key, f"{key} must be a list of entity type names")
        return frozenset()
    for type_name in value:
        if not _TYPE_NAME.fullmatch(type_name):
            problem(key, f"{key}: {type_name!r} is not a Cedar entity type name")
        elif is_action_type(type_name):
            problem(key, f"{key}: actions can never be sent per request ({type_name!r})")
    return frozenset(v for v in value if _TYPE_NAME.fullmatch(v) and not is_action_type(v))


def _line_of(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(key):
            return number
    return 1

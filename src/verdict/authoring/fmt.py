"""`verdict fmt`: Cedar's formatting for every policy file of every store, or a check of it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from verdict import cedar
from verdict.cedar import CedarError
from verdict.errors import Diagnostic
from verdict.files import FileReadError, read_text
from verdict.policy.file_limits import MAX_POLICY_FILE_BYTES
from verdict.policy.loader import policy_files, store_roots, syntax_problems


@dataclass(frozen=True)
class FormatResult:
    """Files whose text is not Cedar's formatting, and files that could not be formatted."""

    unformatted: tuple[Path, ...]
    problems: tuple[Diagnostic, ...]


def formatted(text: str) -> str:
    """``text`` as Cedar formats it, ending in exactly one newline (an empty file stays empty)."""
    if not text.strip():
        return text
    return cedar.format_policies(text).rstrip("\n") + "\n"


def format_stores(stores_dir: Path, *, write: bool) -> FormatResult:
    """Check (and with ``write``, rewrite in place, atomically) every ``*.cedar`` file."""
    unformatted: list[Path] = []
    problems: list[Diagnostic] = []
    for root in store_roots(stores_dir):
        for path in policy_files(root):
            try:
                text = read_text(path, MAX_POLICY_FILE_BYTES)
            except FileReadError as exc:
                problems.append(Diagnostic(str(path), 0, f"cannot format: {exc}"))
                continue
            try:
                wanted = formatted(text)
            except CedarError as exc:
                # Cedar's formatter gives no position: say where, as a load would.
                found = syntax_problems(text, str(path))
                problems += found or [Diagnostic(str(path), 0, f"cannot format: {exc}")]
                continue
            if wanted == text:
                continue
            unformatted.append(path)
            if write:
                staged = path.with_name(f".{path.name}.fmt")
                staged.write_text(wanted, encoding="utf-8")
                os.replace(staged, path)
    return FormatResult(tuple(unformatted), tuple(problems))

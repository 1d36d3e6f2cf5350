"""Exact lines for policy errors: Cedar's messages carry no position, so we find it ourselves.

Syntax errors are located by parsing ever longer prefixes of the text (by whole lines, in a
binary search): while the prefix ends before the fault Cedar says something else ("unexpected
end of input"); the first prefix that includes it fails with the very message of the whole.
Validation errors name the thing at fault in backticks; the first line of the policy body that
contains it is the line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from verdict import cedar
from verdict.cedar import CedarError

_NEXT_POLICY = re.compile(r"^unexpected token `(@|permit|forbid)`")
_QUOTED = re.compile(r"`([^`]+)`")
_TRAILING_NAME = re.compile(r":\s*([A-Za-z_][\w:\"]*)\s*$")


def locate_syntax_error(text: str, first_line: int, message: str) -> tuple[int, str]:
    """The line of a syntax error in a statement starting at ``first_line``, and the message to
    show (a missing ``;`` is reported after the policy that lacks it, not at the next one)."""
    lines = text.split("\n")
    high = first_failing_prefix(lines, lambda prefix: _policy_error(prefix) == message)
    line = first_line + high - 1
    if _NEXT_POLICY.match(message):
        ended = _last_code_line(lines[: high - 1])
        if ended is not None:
            return first_line + ended, "missing ';' at the end of this policy"
    name = _name_in(message)
    if name is not None and not message.startswith("unexpected token"):
        found = _first_line_with(lines, name)
        if found is not None:
            return first_line + found, message
    return line, message


def locate_in_policy(text: str, first_line: int, message: str) -> int:
    """The line of the first thing ``message`` names (in backticks) in the policy body; the
    policy's first line when none is found."""
    lines = text.split("\n")
    for name in _QUOTED.findall(message):
        for candidate in (name, name.rpartition("::")[2].strip('"')):
            found = _first_line_with(lines, candidate)
            if found is not None:
                return first_line + found
    return first_line


def locate_schema_error(text: str, message: str) -> int:
    """The line of a Cedar-syntax schema error: the first prefix failing with the same message."""
    lines = text.split("\n")
    return first_failing_prefix(lines, lambda prefix: _schema_error(prefix) == message)


def first_failing_prefix(lines: list[str], fails: Callable[[str], bool]) -> int:
    """The fewest leading lines (1-based count) whose text ``fails``; a binary search, so a
    fault is found in a few parses. ``len(lines)`` when only the whole text fails."""
    low, high = 1, len(lines)
    while low < high:
        middle = (low + high) // 2
        if fails("\n".join(lines[:middle])):
            high = middle
        else:
            low = middle + 1
    return high


def _policy_error(prefix: str) -> str | None:
    try:
        cedar.policy_to_json(prefix)
    except CedarError as exc:
        return str(exc)
    return None


def _schema_error(prefix: str) -> str | None:
    try:
        cedar.parse_schema(prefix, is_json=False)
    except CedarError as exc:
        return str(exc)
    return None


def _name_in(message: str) -> str | None:
    quoted = _QUOTED.findall(message)
    if quoted:
        return str(quoted[0])
    trailing = _TRAILING_NAME.search(message)
    return trailing.group(1) if trailing else None


def _first_line_with(lines: list[str], name: str) -> int | None:
    """Index of the first code line (not an annotation or comment) holding ``name`` as a word."""
    word = re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")
    for index, line in enumerate(lines):
        code = line.split("//", 1)[0]
        if code.lstrip().startswith("@"):
            continue
        if word.search(code):
            return index
    return None


def _last_code_line(lines: list[str]) -> int | None:
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].split("//", 1)[0].strip():
            return index
    return None

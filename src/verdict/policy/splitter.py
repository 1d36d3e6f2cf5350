"""Split Cedar policy text into one statement per policy, remembering where each starts.

cedarpy reports parse errors without positions; parsing statement by statement lets the loader
say which file and line a broken or invalid policy starts on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Statement:
    """The text of one policy (annotations included, up to its ``;``) and its first line."""

    text: str
    line: int


def split_statements(source: str) -> list[Statement]:
    """Split at top-level ``;`` outside strings and ``//`` comments.

    Cedar expressions contain no ``;`` of their own, so a top-level ``;`` always ends a policy.
    Trailing text without a ``;`` becomes a final statement, which then fails to parse.
    """
    statements: list[Statement] = []
    start: int | None = None
    start_line = line = 1
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "\n":
            line += 1
        elif ch == "/" and source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        elif not ch.isspace():
            if start is None:
                start, start_line = i, line
            if ch == '"':
                i, line = _skip_string(source, i, line)
                continue
            if ch == ";":
                statements.append(Statement(source[start : i + 1], start_line))
                start = None
        i += 1
    if start is not None:
        statements.append(Statement(source[start:], start_line))
    return statements


def _skip_string(source: str, i: int, line: int) -> tuple[int, int]:
    """Return the index after the string literal opening at ``i`` and the updated line."""
    i += 1
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            if source.startswith("\n", i + 1):
                line += 1
            i += 2
            continue
        if ch == "\n":
            line += 1
        if ch == '"':
            return i + 1, line
        i += 1
    return i, line

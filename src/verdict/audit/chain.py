"""Hash chaining of audit records, and the check that finds a removed, reordered or altered one.

Each record is one line of canonical JSON. It carries ``segment`` (which chain it belongs to: a
file, or one writer's part of a Redis stream), ``seq`` (its position in the segment) and
``prev``: the SHA-256 of the previous line of the segment, or, for the first, the anchor
``"anchor:" + segment``. Changing, removing or reordering any record breaks the next record's
``prev`` (or its ``seq``). Only cutting records off the end leaves no trace in the chain
itself: ship records off the machine as they are written (the Redis stream sink) to keep a
copy an attacker on the host cannot shorten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any


def record_lines(text: str) -> list[str]:
    """The lines of an audit file: split at newlines only (never at the other characters
    str.splitlines() ends a line at, which logs written before they were escaped may hold)."""
    return text.split("\n")


def line_hash(line: str) -> str:
    """The hex SHA-256 of one record line (without its newline)."""
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def anchor(segment: str) -> str:
    """The ``prev`` of a segment's first record."""
    return f"anchor:{segment}"


# The characters str.splitlines() (and many log tools) end a line at that JSON leaves raw: a
# caller's entity id holding U+2028 split an untouched record in two, and the log failed verify.
_LINE_ENDS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def canonical(record: Mapping[str, Any]) -> str:
    """One record as the line that is written and hashed: sorted keys, no spaces, UTF-8, and
    no character any reader could take for the end of a line (escaped, as JSON allows)."""
    line = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return line.translate(_LINE_ENDS)


class Chainer:
    """Stamps records of one segment with ``segment``, ``seq`` and ``prev``."""

    def __init__(self, segment: str) -> None:
        self.segment = segment
        self._seq = 0
        self._prev = anchor(segment)

    def state(self) -> tuple[int, str]:
        """Where the chain stands (to restore it when a write of chained lines fails)."""
        return self._seq, self._prev

    def restore(self, state: tuple[int, str]) -> None:
        """Go back to ``state``: lines chained after it were never written."""
        self._seq, self._prev = state

    def chain(self, record: Mapping[str, Any]) -> str:
        """The record's line, linked to the previous one."""
        line = canonical({**record, "segment": self.segment, "seq": self._seq, "prev": self._prev})
        self._seq += 1
        self._prev = line_hash(line)
        return line


@dataclass(frozen=True)
class Break:
    """Where a chain is broken: the line number (1-based, in what was read) and why."""

    position: int
    segment: str
    problem: str


def verify(lines: Iterable[str]) -> tuple[int, list[Break]]:
    """Check every segment's chain in ``lines``; the number of records read and the breaks.

    Segments may be interleaved (several writers on one Redis stream); each is checked on
    its own, in the order its records appear.
    """
    state: dict[str, tuple[int, str]] = {}  # segment -> (next seq, expected prev)
    breaks: list[Break] = []
    count = 0
    for position, line in _numbered(lines):
        count += 1
        record = _parse(line)
        if record is None:
            breaks.append(Break(position, "", "not a JSON audit record"))
            continue
        segment, seq, prev = record.get("segment"), record.get("seq"), record.get("prev")
        if not isinstance(segment, str) or not isinstance(seq, int) or not isinstance(prev, str):
            breaks.append(Break(position, str(segment), "no segment, seq or prev"))
            continue
        expected_seq, expected_prev = state.get(segment, (0, anchor(segment)))
        if seq != expected_seq:
            problem = f"seq {seq} where {expected_seq} was expected (records removed or reordered)"
            breaks.append(Break(position, segment, problem))
        elif prev != expected_prev:
            problem = "prev does not match the record before it (a record altered or replaced)"
            breaks.append(Break(position, segment, problem))
        state[segment] = (seq + 1, line_hash(line))
    return count, breaks


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, start=1):
        stripped = line.rstrip("\n")
        if stripped:
            yield number, stripped


def _parse(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, RecursionError):  # nested past the parser's depth: no record
        return None
    return value if isinstance(value, dict) else None

"""Hash chaining of audit records, and the check that finds a removed, reordered or altered one.

Each record is one line of canonical JSON. It carries ``segment`` (which chain it belongs to: a
file, or one writer's part of a Redis stream), ``seq`` (its position in the segment) and
``prev``: the SHA-256 of the previous line of the segment, or, for the first, the anchor
``"anchor:" + segment``. Changing, removing or reordering any record breaks the next record's
``prev`` (or its ``seq``). Only cutting records off the end leaves no trace in the chain
itself: ship records off the machine as they are written (the Redis stream sink) to keep a
copy an attacker on the host cannot shorten. With a key (``verdict.audit.keys``), each record
also carries ``key_id`` and ``mac``, and records made without the key are found too.

A write whose outcome is unknown (a Redis call that timed out may still run when Redis
resumes) cannot be taken back, so the chain is not rewound over it: the writer goes on in a new
segment whose first record says ``follows: [{segment, acknowledged}]``, and the old segment's
records from ``seq`` ``acknowledged`` on, should they appear, are known as never acknowledged
(their decisions were refused, their records counted as dropped, or, in block mode, written
again in the new segment).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verdict.audit.keys import AuditKey

MAC_FIELD = "mac"
MAX_MARKS = 64  # segments a first record marks: failed writes in a row, while none succeeds


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
    """Stamps records of one segment with ``segment``, ``seq`` and ``prev`` (and, with a key,
    ``key_id`` and ``mac``); the first record of a segment that ``follows`` another says so."""

    def __init__(
        self,
        segment: str,
        key: AuditKey | None = None,
        follows: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.segment = segment
        self.key = key
        self._seq = 0
        self._prev = anchor(segment)
        self._follows = list(follows)

    def successor(self, state: tuple[int, str], segment: str) -> Chainer:
        """The chain that goes on in ``segment`` after lines chained since ``state`` may or may
        not have been stored: they stay this segment's, marked as never acknowledged.

        While a segment has nothing acknowledged, its first record (which carries the marks)
        may not be stored either: its marks are carried on, the most recent ``MAX_MARKS``.
        """
        acknowledged, _ = state
        carried = self._follows if acknowledged == 0 else []
        mark = {"segment": self.segment, "acknowledged": acknowledged}
        return Chainer(segment, self.key, [*carried, mark][-MAX_MARKS:])

    def state(self) -> tuple[int, str]:
        """Where the chain stands (to restore it when a write of chained lines fails)."""
        return self._seq, self._prev

    def restore(self, state: tuple[int, str]) -> None:
        """Go back to ``state``: lines chained after it were never written."""
        self._seq, self._prev = state

    def chain(self, record: Mapping[str, Any]) -> str:
        """The record's line, linked to the previous one."""
        stamped = {**record, "segment": self.segment, "seq": self._seq, "prev": self._prev}
        if self._seq == 0 and self._follows:
            stamped["follows"] = self._follows
        if self.key is not None:
            stamped["key_id"] = self.key.key_id
            stamped[MAC_FIELD] = self.key.mac(canonical(stamped))
        line = canonical(stamped)
        self._seq += 1
        self._prev = line_hash(line)
        return line


@dataclass(frozen=True)
class Break:
    """Where a chain is broken: the line number (1-based, in what was read) and why."""

    position: int
    segment: str
    problem: str


def verify(lines: Iterable[str], key: AuditKey | None = None) -> tuple[int, list[Break]]:
    """Check every segment's chain in ``lines`` (and, given ``key``, every record's MAC); the
    number of records read and the breaks.

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
        unsigned = _unsigned(record, key)
        if unsigned is not None:
            breaks.append(Break(position, segment, unsigned))
        elif seq != expected_seq:
            problem = f"seq {seq} where {expected_seq} was expected (records removed or reordered)"
            breaks.append(Break(position, segment, problem))
        elif prev != expected_prev:
            problem = "prev does not match the record before it (a record altered or replaced)"
            breaks.append(Break(position, segment, problem))
        state[segment] = (seq + 1, line_hash(line))
    return count, breaks


def _unsigned(record: dict[str, Any], key: AuditKey | None) -> str | None:
    """Why ``record`` is not signed by ``key`` (None: it is, or there is no key to check)."""
    if key is None:
        return None
    mac, key_id = record.get(MAC_FIELD), record.get("key_id")
    if not isinstance(mac, str):
        return "no mac: a record not signed with the key (forged, or written without a key)"
    if key_id != key.key_id:
        return f"signed with another key (key_id {str(key_id)[:32]!r}, not {key.key_id!r})"
    body = {name: value for name, value in record.items() if name != MAC_FIELD}
    if not key.signed(canonical(body), mac):
        return "mac does not match: the record was altered or forged"
    return None


@dataclass(frozen=True)
class Unacknowledged:
    """Records written but never acknowledged (see the module docstring), by segment: each
    segment's records from its ``seq`` on."""

    first_seq: dict[str, int]

    @classmethod
    def of(cls, lines: Iterable[str]) -> Unacknowledged:
        """The marks that segments' first records in ``lines`` carry."""
        first_seq: dict[str, int] = {}
        for _, line in _numbered(lines):
            record = _parse(line)
            follows = record.get("follows") if record is not None else None
            for mark in follows if isinstance(follows, list) else ():
                if not isinstance(mark, dict):
                    continue
                segment, acknowledged = mark.get("segment"), mark.get("acknowledged")
                if isinstance(segment, str) and isinstance(acknowledged, int):
                    first_seq[segment] = min(acknowledged, first_seq.get(segment, acknowledged))
        return cls(first_seq)

    def holds(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` is one of them: its decision was never answered as recorded."""
        segment, seq = record.get("segment"), record.get("seq")
        first = self.first_seq.get(segment) if isinstance(segment, str) else None
        return first is not None and isinstance(seq, int) and seq >= first

    def count(self, lines: Iterable[str]) -> int:
        """How many records of ``lines`` are unacknowledged."""
        return sum(1 for _, line in _numbered(lines) if self.holds(_parse(line) or {}))


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

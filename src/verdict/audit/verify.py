"""The check of audit logs: breaks in each segment's chain, and across the files of one log.

Within a segment: ``seq`` must count up from 0 and ``prev`` hash the line before (see
``verdict.audit.chain``). Given the key, every record must also be signed with it and written
in canonical form (the MAC covers the record, the hash the line: a line rewritten in another
form that parses the same would otherwise pass at the end of a segment). Across the files of a
log: a segment lives in one file only (a copy elsewhere replays old decisions as new), a
segment's ``after`` names the last record of the segment it continues in a file (cutting that
segment's end leaves the reference dangling), and a ``follows`` mark's ``acknowledged`` count
says how many records the marked segment holds at least.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from verdict.audit.chain import MAC_FIELD, anchor, canonical, line_hash
from verdict.audit.keys import AuditKey


@dataclass(frozen=True)
class Break:
    """Where a chain is broken: the line number (1-based, in what was read) and why."""

    position: int
    segment: str
    problem: str


@dataclass
class _Segment:
    source: str
    next_seq: int = 0
    last_hash: str = ""


@dataclass
class _Claim:
    """What a record says of another segment: at least ``records`` of it (``follows``), or
    exactly its last record (``after``)."""

    source: str
    position: int
    segment: str
    target: str
    records: int
    last_hash: str | None = None


@dataclass
class Verification:
    """The check of one log, source by source (files, or one stream)."""

    key: AuditKey | None = None
    counts: dict[str, int] = field(default_factory=dict)
    breaks: dict[str, list[Break]] = field(default_factory=dict)
    _segments: dict[str, _Segment] = field(default_factory=dict)
    _claims: list[_Claim] = field(default_factory=list)

    def read(self, source: str, lines: Iterable[str]) -> None:
        """Check the records of one source, in order."""
        self.counts.setdefault(source, 0)
        found = self.breaks.setdefault(source, [])
        for position, line in numbered(lines):
            self.counts[source] += 1
            problem, segment = self._check(source, position, line)
            if problem is not None:
                found.append(Break(position, segment, problem))

    def finish(self) -> None:
        """The checks across sources, once every source is read."""
        for claim in self._claims:
            target = self._segments.get(claim.target)
            if target is None:
                continue  # a file not given to the check: nothing to compare with
            if claim.last_hash is None and target.next_seq < claim.records:
                problem = (
                    f"segment {claim.target} holds {target.next_seq} records where this record "
                    f"says {claim.records} were acknowledged (records removed)"
                )
            elif claim.last_hash is not None and (
                target.next_seq != claim.records or target.last_hash != claim.last_hash
            ):
                problem = (
                    f"segment {claim.target} ends at seq {target.next_seq - 1} where this record "
                    f"says it ended at seq {claim.records - 1} (records removed or added)"
                )
            else:
                continue
            self.breaks[claim.source].append(Break(claim.position, claim.segment, problem))
        for found in self.breaks.values():
            found.sort(key=lambda b: b.position)

    def unacknowledged(self) -> Unacknowledged:
        """The records that ``follows`` marks of intact, signed records name as never
        acknowledged; without a key, none (a mark is then as forgeable as the rest)."""
        first_seq: dict[str, int] = {}
        for claim in self._claims if self.key is not None else ():
            if claim.last_hash is None:
                first_seq[claim.target] = min(
                    claim.records, first_seq.get(claim.target, claim.records)
                )
        return Unacknowledged(first_seq)

    def _check(self, source: str, position: int, line: str) -> tuple[str | None, str]:
        record = parse_record(line)
        if record is None:
            return "not a JSON audit record", ""
        segment, seq, prev = record.get("segment"), record.get("seq"), record.get("prev")
        if not isinstance(segment, str) or type(seq) is not int or not isinstance(prev, str):
            return "no segment, seq or prev", str(segment)[:200]
        state = self._segments.setdefault(segment, _Segment(source))
        if state.source != source:
            return f"segment {segment} also appears in {state.source} (records copied)", segment
        expected_seq = state.next_seq
        expected_prev = anchor(segment) if expected_seq == 0 else state.last_hash
        state.next_seq, state.last_hash = seq + 1, line_hash(line)
        unsigned = unsigned_reason(record, line, self.key)
        if unsigned is not None:
            return unsigned, segment
        if seq != expected_seq:
            return f"seq {seq} where {expected_seq} was expected (records removed or reordered)", (
                segment
            )
        if prev != expected_prev:
            return "prev does not match the record before it (a record altered or replaced)", (
                segment
            )
        if seq == 0:
            self._claims.extend(_claims(source, position, segment, record))
        return None, segment


def verify(lines: Iterable[str], key: AuditKey | None = None) -> tuple[int, list[Break]]:
    """Check one source (a file, or a stream's records); the records read and the breaks."""
    check = Verification(key)
    check.read("", lines)
    check.finish()
    return check.counts[""], check.breaks[""]


def verify_sources(
    sources: Mapping[str, Iterable[str]], key: AuditKey | None = None
) -> Verification:
    """Check the sources of one log together (the live file and the rotated ones)."""
    check = Verification(key)
    for name, lines in sources.items():
        check.read(name, lines)
    check.finish()
    return check


def unsigned_reason(record: dict[str, Any], line: str, key: AuditKey | None) -> str | None:
    """Why ``record`` (read from ``line``) is not signed by ``key`` (None: it is, or there is
    no key to check)."""
    if key is None:
        return None
    mac, key_id = record.get(MAC_FIELD), record.get("key_id")
    if not isinstance(mac, str):
        return "no mac: a record not signed with the key (forged, or written without a key)"
    if key_id != key.key_id:
        return f"signed with another key (key_id {str(key_id)[:32]!r}, not {key.key_id!r})"
    if canonical(record) != line:
        return "not in canonical form: the line was rewritten"
    body = {name: value for name, value in record.items() if name != MAC_FIELD}
    if not key.signed(canonical(body), mac):
        return "mac does not match: the record was altered or forged"
    return None


def _claims(source: str, position: int, segment: str, record: dict[str, Any]) -> list[_Claim]:
    found = []
    follows = record.get("follows")
    for mark in follows if isinstance(follows, list) else ():
        target, acknowledged = _field(mark, "segment", str), _field(mark, "acknowledged", int)
        if target is not None and acknowledged is not None:
            found.append(_Claim(source, position, segment, target, acknowledged))
    after = record.get("after")
    target, seq, last = _field(after, "segment", str), _field(after, "seq", int), None
    if isinstance(after, dict):
        last = _field(after, "hash", str)
    if target is not None and seq is not None and last is not None:
        found.append(_Claim(source, position, segment, target, seq + 1, last))
    return found


def _field(value: Any, name: str, kind: type) -> Any:
    found = value.get(name) if isinstance(value, dict) else None
    return found if type(found) is kind else None


@dataclass(frozen=True)
class Unacknowledged:
    """Records written but never acknowledged (``verdict.audit.chain``), by segment: each
    segment's records from its ``seq`` on. Given a key, only marks in intact records signed
    with it count; without one, none do (replay then replays them: more changes, never
    fewer)."""

    first_seq: dict[str, int]

    @classmethod
    def of(cls, lines: Iterable[str], key: AuditKey | None) -> Unacknowledged:
        """The marks in ``lines`` (one source), as ``Verification.unacknowledged`` finds them."""
        return verify_sources({"": lines}, key).unacknowledged()

    def holds(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` is one of them: its decision was never answered as recorded."""
        segment, seq = record.get("segment"), record.get("seq")
        first = self.first_seq.get(segment) if isinstance(segment, str) else None
        return first is not None and isinstance(seq, int) and seq >= first

    def count(self, lines: Iterable[str]) -> int:
        """How many records of ``lines`` are unacknowledged."""
        return sum(1 for _, line in numbered(lines) if self.holds(parse_record(line) or {}))


def numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """The non-empty lines with their 1-based numbers."""
    for number, line in enumerate(lines, start=1):
        stripped = line.rstrip("\n")
        if stripped:
            yield number, stripped


def parse_record(line: str) -> dict[str, Any] | None:
    """One line as a JSON object, or None: not JSON, nested past the parser's depth, or an
    integer past Python's digit limit (a ValueError, not a JSONDecodeError)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None

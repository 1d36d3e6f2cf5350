"""Hash chaining of audit records (``verdict.audit.verify`` checks the chains).

Each record is one line of canonical JSON. It carries ``segment`` (which chain it belongs to: a
file, or one writer's part of a Redis stream), ``seq`` (its position in the segment) and
``prev``: the SHA-256 of the previous line of the segment, or, for the first, the anchor
``"anchor:" + segment``. Changing, removing or reordering any record breaks the next record's
``prev`` (or its ``seq``). Only cutting records off the end of the newest segment leaves no
trace in the chain itself: ship records off the machine as they are written (the Redis stream
sink) to keep a copy an attacker on the host cannot shorten. With a key
(``verdict.audit.keys``), each record also carries ``key_id`` and ``mac``, and records made
without the key are found too.

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
from collections.abc import Mapping, Sequence
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
    ``key_id`` and ``mac``). A segment's first record says which segments it ``follows``
    after failed writes, and which segment's last record it comes ``after`` in a file (a
    restart, a rotation), so that records cut from the end of that segment are found."""

    def __init__(
        self,
        segment: str,
        key: AuditKey | None = None,
        follows: Sequence[Mapping[str, Any]] = (),
        after: Mapping[str, Any] | None = None,
    ) -> None:
        self.segment = segment
        self.key = key
        self._seq = 0
        self._prev = anchor(segment)
        self._follows = list(follows)
        self._after = after

    def last(self) -> dict[str, Any] | None:
        """Where this segment ends so far (``{segment, seq, hash}`` of its last line), for
        the segment that comes after it in the same file or the next one to name."""
        if self._seq == 0:
            return None
        return {"segment": self.segment, "seq": self._seq - 1, "hash": self._prev}

    def successor(
        self, state: tuple[int, str], segment: str, after: Mapping[str, Any] | None = None
    ) -> Chainer:
        """The chain that goes on in ``segment`` after lines chained since ``state`` may or may
        not have been stored: they stay this segment's, marked as never acknowledged
        (``after``: where this segment ends, when the next one goes on in the same file).

        While a segment has nothing acknowledged, its first record (which carries the marks)
        may not be stored either: its marks are carried on, the most recent ``MAX_MARKS``.
        """
        acknowledged, _ = state
        carried = self._follows if acknowledged == 0 else []
        mark = {"segment": self.segment, "acknowledged": acknowledged}
        return Chainer(segment, self.key, [*carried, mark][-MAX_MARKS:], after)

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
        if self._seq == 0 and self._after is not None:
            stamped["after"] = dict(self._after)
        if self.key is not None:
            stamped["key_id"] = self.key.key_id
            stamped[MAC_FIELD] = self.key.mac(canonical(stamped))
        line = canonical(stamped)
        self._seq += 1
        self._prev = line_hash(line)
        return line

"""`verdict audit replay`: recorded decisions re-evaluated against candidate policies.

Each record's request is rebuilt from what was recorded (uids, store, the context attributes
the store lets the audit log keep) and answered by the engine over the candidate stores and
their current entities (past entity versions are not kept). A record whose request sent
context attributes that were not recorded cannot be replayed faithfully and is counted apart,
never guessed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from verdict.audit.keys import AuditKey
from verdict.audit.verify import Unacknowledged, parse_record
from verdict.cedar_json import parse_uid
from verdict.engine.authorizer import Authorizer
from verdict.errors import VerdictError
from verdict.model import AuthorizationRequest, AuthorizationResult


@dataclass(frozen=True)
class Change:
    """A recorded decision that the candidate policies answer differently."""

    position: int
    record: dict[str, Any]
    now: str
    policies: tuple[str, ...]


@dataclass
class ReplayReport:
    """What replay found."""

    replayed: int = 0
    changes: list[Change] = field(default_factory=list)
    not_replayable: Counter[str] = field(default_factory=Counter)

    def by_policy(self) -> dict[str, list[Change]]:
        """Changes grouped by the policy that decides now (or decided before), sorted."""
        groups: dict[str, list[Change]] = {}
        for change in self.changes:
            key = ", ".join(change.policies) or "(no policy: default deny or errors)"
            groups.setdefault(key, []).append(change)
        return dict(sorted(groups.items()))


async def replay(
    lines: Iterable[str], authorizer: Authorizer, key: AuditKey | None = None
) -> ReplayReport:
    """Replay every decision record in ``lines`` through ``authorizer``; given ``key``, skip
    those that records signed with it mark as never acknowledged."""
    report = ReplayReport()
    lines = list(lines)
    unacknowledged = Unacknowledged.of(lines, key)
    for position, line in enumerate(lines, start=1):
        record = _decision_record(line)
        if record is None:
            continue
        if unacknowledged.holds(record):  # its decision was never answered as recorded
            report.not_replayable["never acknowledged"] += 1
            continue
        request, reason = _request(record)
        if request is None:
            report.not_replayable[reason] += 1
            continue
        report.replayed += 1
        try:
            answer: AuthorizationResult | VerdictError = await authorizer.authorize(request)
        except VerdictError as exc:
            answer = exc
        now, policies = _summary(answer)
        if now != record.get("decision"):
            determining = record.get("determining", ())
            before = tuple(map(str, determining)) if isinstance(determining, list) else ()
            report.changes.append(Change(position, record, now, policies or before))
    return report


def _decision_record(line: str) -> dict[str, Any] | None:
    record = parse_record(line)
    if record is None or record.get("decision") not in ("ALLOW", "DENY"):
        return None
    return record


def _request(record: dict[str, Any]) -> tuple[AuthorizationRequest | None, str]:
    uids = [parse_uid(record.get(part)) for part in ("principal", "action", "resource")]
    principal, action, resource = uids
    if principal is None or action is None or resource is None:
        return None, "not a decision record"
    context, keys = record.get("context", {}), record.get("context_keys", [])
    # A log is input like any other: wrong shapes are reported, never a traceback.
    shaped = isinstance(context, dict) and isinstance(keys, list)
    if not shaped or not all(isinstance(key, str) for key in keys):
        return None, "malformed record"
    missing = sorted(set(keys) - set(context))
    if missing:
        return None, f"context not recorded: {', '.join(missing)}"
    store = str(record.get("store", ""))
    return AuthorizationRequest(principal, action, resource, context, store), ""


def _summary(answer: AuthorizationResult | VerdictError) -> tuple[str, tuple[str, ...]]:
    if isinstance(answer, VerdictError):
        return "ERROR", ()
    return answer.decision.value.upper(), tuple(answer.determining_policies)

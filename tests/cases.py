"""Load the shared decision cases in tests/data so every layer runs the same list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from verdict.model import AuthorizationRequest, EntityUid
from verdict.uid_arg import parse_uid_arg

DATA = Path(__file__).parent / "data"
BASE_CONTEXT: dict[str, Any] = {
    "mfa": True,
    "now": "2025-03-04T10:00:00Z",
    "source_ip": "10.20.0.5",
}


@dataclass(frozen=True)
class DecisionCase:
    """One expected decision of the lending store."""

    principal: EntityUid
    action: EntityUid
    resource: EntityUid
    context: dict[str, Any]
    expect: str
    determining: frozenset[str]

    @property
    def request(self) -> AuthorizationRequest:
        """The domain request for this case."""
        return AuthorizationRequest(
            self.principal, self.action, self.resource, self.context, store_id="lending"
        )

    def __str__(self) -> str:
        return f"{self.principal} {self.action.id} {self.resource}"


def lending_cases() -> list[DecisionCase]:
    """The lending decision cases."""
    raw = yaml.safe_load((DATA / "lending_decisions.yaml").read_text())
    return [
        DecisionCase(
            principal=parse_uid_arg(item["principal"], "principal"),
            action=EntityUid("Action", item["action"]),
            resource=parse_uid_arg(item["resource"], "resource"),
            context={**BASE_CONTEXT, **item.get("context", {})},
            expect=item["expect"],
            determining=frozenset(item["determining"]),
        )
        for item in raw
    ]

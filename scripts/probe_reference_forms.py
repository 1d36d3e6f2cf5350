"""Ask cedarpy how it reads each spelling of an entity reference (the evidence behind cedar_json).

For each context value, forbids `context.v in Group::"blocked"` and `context.v.y in ...` are
evaluated with `User::"x"` (a member of the group) stored and without it. "reference at v"
means Cedar followed `context.v` to the stored entity (DENY with it, ALLOW without, no error);
"refused" means Cedar rejected the request (NoDecision).
Run: .venv/bin/python scripts/probe_reference_forms.py
"""

from __future__ import annotations

from typing import Any

import cedarpy

X = {"type": "User", "id": "x"}
IP = {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}
FORMS: dict[str, Any] = {
    "canonical __entity": {"__entity": X},
    "__entity with an extra key inside": {"__entity": {**X, "v": 1}},
    "__entity with a sibling key": {"__entity": X, "z": 1},
    "plain {type, id}": X,
    "plain {type, id} with an extra key": {**X, "v": 1},
    "__extn with a sibling (reference in .y)": {"__extn": IP["__extn"], "y": {"__entity": X}},
    "__extn without arg (reference in .y)": {"__extn": {"fn": "ip"}, "y": {"__entity": X}},
    "__entity holding a string": {"__entity": 'User::"x"'},
}
PROBES = {
    "v": 'forbid(principal, action, resource) when { context.v in Group::"blocked" };',
    "v.y": "forbid(principal, action, resource) when "
    '{ context.v has y && context.v.y in Group::"blocked" };',
}
SCHEMA = """
entity Group; entity User in [Group]; entity Doc;
action view appliesTo { principal: User, resource: Doc, context: { v: User } };
"""
ENTITIES = [
    {"uid": X, "attrs": {}, "parents": [{"type": "Group", "id": "blocked"}]},
    {"uid": {"type": "Group", "id": "blocked"}, "attrs": {}, "parents": []},
]


def reading(value: Any, schema: Any) -> str:
    """How Cedar reads ``value`` as ``context.v``: which paths in it it follows to an entity."""
    results = [_follows(value, schema, probe) for probe in PROBES.values()]
    if "refused" in results:
        return "refused"
    followed = [path for path, result in zip(PROBES, results, strict=True) if result]
    return "reference at " + ", ".join(followed) if followed else "no reference"


def _follows(value: Any, schema: Any, probe: str) -> bool | str:
    policies = cedarpy.PolicySet.from_str("permit(principal, action, resource);" + probe)
    request = {
        "principal": {"type": "User", "id": "p"},
        "action": {"type": "Action", "id": "view"},
        "resource": {"type": "Doc", "id": "d"},
        "context": {"v": value},
    }
    stored = cedarpy.is_authorized(request, policies, ENTITIES, schema)
    absent = cedarpy.is_authorized(request, policies, [], schema)
    if stored.decision.value == "NoDecision":
        return "refused"
    return (stored.decision.value, absent.decision.value) == ("Deny", "Allow") and not (
        stored.diagnostics.errors
    )


def main() -> None:
    """Print one line per spelling: how Cedar reads it without and with a schema."""
    schema = cedarpy.Schema.from_str(SCHEMA)
    print(f"{'spelling':42} {'no schema':20} with schema")
    for name, value in FORMS.items():
        print(f"{name:42} {reading(value, None):20} {reading(value, schema)}")


if __name__ == "__main__":
    main()

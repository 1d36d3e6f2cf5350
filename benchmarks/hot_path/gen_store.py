"""Generated policy stores of N per-partner, per-loan policies plus a few global forbids."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verdict.client import build_request

STORE = "gen"
ACTIONS = ("view", "update", "approve")
PER_LOAN = len(ACTIONS)  # scoped permits per loan: one per action, so 1 of them applies
SCHEMA = """\
// Generated for the hot-path benchmark: partners own users, loans hold documents.
entity Partner = { active: Bool };
entity User in [Partner] = { suspended: Bool, level: Long };
entity Loan = { status: String, amount: Long };
entity Document in [Loan] = { classification: String };

type Ctx = { mfa: Bool };
action view, update, approve appliesTo {
  principal: [User],
  resource: [Loan, Document],
  context: Ctx,
};
"""
# The handful of unscoped policies every request is evaluated against.
GLOBAL_FORBIDS = (
    '@id("forbid-suspended")\nforbid (principal, action, resource) when { principal.suspended };',
    '@id("forbid-approve-without-mfa")\n'
    'forbid (principal, action == Action::"approve", resource) unless { context.mfa };',
    '@id("forbid-closed-loans")\n'
    'forbid (principal, action in [Action::"update", Action::"approve"], resource is Loan)\n'
    'when { resource.status == "closed" };',
    '@id("forbid-big-approvals")\n'
    'forbid (principal, action == Action::"approve", resource is Loan)\n'
    "when { resource.amount > 1000000 && principal.level < 3 };",
)
Variant = str  # "scope": uids only in scopes; "condition": a uid named in every condition
VARIANTS: tuple[Variant, ...] = ("scope", "condition")


@dataclass(frozen=True)
class Shape:
    """How many of each thing a store of ``policies`` policies has."""

    policies: int

    @property
    def loans(self) -> int:
        return max(1, (self.policies - len(GLOBAL_FORBIDS)) // PER_LOAN)

    @property
    def partners(self) -> int:
        return max(2, min(200, self.loans // 10))

    def partner_of(self, loan: int) -> int:
        return loan % self.partners


def permit(shape: Shape, index: int, variant: Variant) -> str:
    """Scoped permit ``index``: loan index // 3, one action each, the loan's partner."""
    loan, action = divmod(index, PER_LOAN)
    partner = shape.partner_of(loan)
    head = f'@id("p{index}")\npermit (\n  principal in Partner::"p{partner}",\n'
    head += f'  action == Action::"{ACTIONS[action]}",\n  resource in Loan::"l{loan}"\n)'
    if variant == "condition":
        # A uid on the right of `in` and one compared by equality in the condition: neither
        # is dereferenced, so neither needs to be fetched into the request's slice.
        return head + (
            f'\nwhen {{ principal in Partner::"p{partner}" && resource != Loan::"x{loan}" }};'
        )
    return head + ";"


def policy_text(shape: Shape, variant: Variant) -> str:
    """The whole policy file: global forbids first, then the scoped permits."""
    count = shape.policies - len(GLOBAL_FORBIDS)
    scoped = (permit(shape, i, variant) for i in range(max(count, 1)))
    return "\n\n".join((*GLOBAL_FORBIDS, *scoped)) + "\n"


def entities(shape: Shape, users_per_partner: int = 2) -> list[dict[str, Any]]:
    """Every partner, loan (one document each) and a few users per partner."""

    def uid(kind: str, ident: str) -> dict[str, str]:
        return {"type": kind, "id": ident}

    out: list[dict[str, Any]] = []
    for p in range(shape.partners):
        out.append({"uid": uid("Partner", f"p{p}"), "attrs": {"active": True}, "parents": []})
        for u in range(users_per_partner):
            user = {"suspended": False, "level": 1 + u}
            out.append(
                {
                    "uid": uid("User", f"u{p}-{u}"),
                    "attrs": user,
                    "parents": [uid("Partner", f"p{p}")],
                }
            )
    for loan in range(shape.loans):
        terms = {"status": "closed" if loan % 7 == 6 else "open", "amount": 1000 * (loan % 2000)}
        out.append({"uid": uid("Loan", f"l{loan}"), "attrs": terms, "parents": []})
        doc = {"classification": "general"}
        out.append(
            {"uid": uid("Document", f"d{loan}"), "attrs": doc, "parents": [uid("Loan", f"l{loan}")]}
        )
    return out


def write_store(stores_dir: Path, policies: int, variant: Variant) -> Path:
    """A stores folder holding one store ``gen``; returns the stores folder."""
    shape = Shape(policies)
    root = stores_dir / STORE
    root.mkdir(parents=True, exist_ok=True)
    (root / "schema.cedarschema").write_text(SCHEMA, encoding="utf-8")
    (root / "store.toml").write_text('validation = "strict"\n', encoding="utf-8")
    (root / "policies.cedar").write_text(policy_text(shape, variant), encoding="utf-8")
    (root / "entities.json").write_text(json.dumps(entities(shape)), encoding="utf-8")
    return stores_dir


@dataclass(frozen=True)
class GenCase:
    """One request against the generated store and the decision it must get."""

    principal: str
    action: str
    resource: str
    allow: bool


def cases(policies: int, count: int = 24, seed: int = 9) -> list[GenCase]:
    """A mix: own-partner users on random loans and documents (allow unless a forbid hits),
    and users of another partner (deny: no permit names them)."""
    shape = Shape(policies)
    rng = random.Random(seed)
    out = []
    for i in range(count):
        loan = rng.randrange(shape.loans)
        action = ACTIONS[i % PER_LOAN]
        partner = shape.partner_of(loan)
        stranger = i % 4 == 3
        if stranger:
            partner = (partner + 1) % shape.partners
        user = i % 2  # level 1 or 2: never allowed big approvals
        resource = f'Loan::"l{loan}"' if i % 3 else f'Document::"d{loan}"'
        closed = loan % 7 == 6
        amount = 1000 * (loan % 2000)
        allow = not stranger
        if action in ("update", "approve") and closed and resource.startswith("Loan"):
            allow = False
        if action == "approve" and resource.startswith("Loan") and amount > 1_000_000:
            allow = False
        out.append(GenCase(f'User::"u{partner}-{user}"', f'Action::"{action}"', resource, allow))
    return out


def messages(policies: int) -> tuple[list[Any], list[bool]]:
    """The cases as IsAuthorizedRequest messages (context mfa true) and their expected allows."""
    mix = cases(policies)
    requests = [
        build_request(c.principal, c.action, c.resource, context={"mfa": True}, store=STORE)
        for c in mix
    ]
    return requests, [c.allow for c in mix]

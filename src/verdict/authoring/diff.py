"""`verdict diff`: what a policy change does, per store: policies added, removed and changed by
id, and the test cases whose decision flips when both versions answer the same suites."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from verdict.policy.snapshot import PolicyInfo, PolicySnapshot, StoreSnapshot
from verdict.policytest.loader import SuiteLoadError, discover, load_plan
from verdict.policytest.runner import evaluate_cases
from verdict.policytest.verdicts import Outcome


@dataclass(frozen=True)
class Flip:
    """A case whose decision differs between the old and the new policies."""

    title: str
    old: Outcome
    new: Outcome


@dataclass(frozen=True)
class StoreDiff:
    """One store's differences; ``old``/``new`` None when the store was added or removed."""

    store_id: str
    old: StoreSnapshot | None
    new: StoreSnapshot | None
    added: tuple[PolicyInfo, ...] = ()
    removed: tuple[PolicyInfo, ...] = ()
    changed: tuple[PolicyInfo, ...] = ()
    flips: tuple[Flip, ...] = ()
    cases: int = 0

    @property
    def differs(self) -> bool:
        """Whether anything about the store changed."""
        return self.old is None or self.new is None or self.old.version != self.new.version


def policy_changes(
    old: StoreSnapshot, new: StoreSnapshot
) -> tuple[tuple[PolicyInfo, ...], tuple[PolicyInfo, ...], tuple[PolicyInfo, ...]]:
    """Policies (templates included) added, removed and changed, by id; moving or reformatting a
    policy is no change, editing its scope, condition or annotations is."""
    added = tuple(p for i, p in new.policies.items() if i not in old.policies)
    removed = tuple(p for i, p in old.policies.items() if i not in new.policies)
    changed = tuple(
        p
        for i, p in new.policies.items()
        if i in old.policies and old.policies[i].fingerprint != p.fingerprint
    )
    return added, removed, changed


def diff_stores(old: PolicySnapshot, new: PolicySnapshot, new_dir: Path) -> list[StoreDiff]:
    """Compare every store; flips are found by running the new tree's suites (its ``tests/``
    folders, with its entity data) through both versions of the policies."""
    flips, cases = _flips(old, new, new_dir)
    diffs = []
    for store_id in sorted(old.stores.keys() | new.stores.keys()):
        before, after = old.stores.get(store_id), new.stores.get(store_id)
        if before is None or after is None:
            diffs.append(StoreDiff(store_id, before, after))
            continue
        added, removed, changed = policy_changes(before, after)
        mine = tuple(flip for owner, flip in flips if owner == store_id)
        count = cases.get(store_id, 0)
        diffs.append(StoreDiff(store_id, before, after, added, removed, changed, mine, count))
    return diffs


def _flips(
    old: PolicySnapshot, new: PolicySnapshot, new_dir: Path
) -> tuple[list[tuple[str, Flip]], dict[str, int]]:
    """Flipped decisions per store, and how many cases each store's comparison ran. A suite
    that cannot be loaded against the old policies (its store is new there, or it names a
    policy the old tree lacks) is compared case by case only where it loads."""
    flips: list[tuple[str, Flip]] = []
    counted: dict[str, int] = {}
    for path in discover([], new_dir, new):
        new_plan = load_plan([path], new, new_dir, check_expectations=False)
        suite = new_plan.suites[0]
        if suite.store_id not in old.stores:
            continue
        try:
            old_plan = load_plan([path], old, new_dir, check_expectations=False)
        except SuiteLoadError:
            continue
        after = asyncio.run(evaluate_cases(new_plan, new_plan.cases))
        before = asyncio.run(evaluate_cases(old_plan, old_plan.cases))
        counted[suite.store_id] = counted.get(suite.store_id, 0) + len(new_plan.cases)
        for case, was, now in zip(new_plan.cases, before, after, strict=True):
            if was.decision != now.decision:
                flips.append((suite.store_id, Flip(case.title, was, now)))
    return flips, counted

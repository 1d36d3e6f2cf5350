"""Per-policy coverage: in how many cases each policy decided, with exact percentages."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from verdict.policy.snapshot import PolicyInfo, PolicySnapshot
from verdict.policytest.runner import CaseResult


@dataclass(frozen=True)
class PolicyCoverage:
    """One policy: cases where it was determining (permit) or fired (forbid), and where it erred."""

    info: PolicyInfo
    decided: int
    errored: int


@dataclass(frozen=True)
class StoreCoverage:
    """Coverage of one store's policies (templates are not evaluated on their own, so excluded)."""

    store_id: str
    policies: tuple[PolicyCoverage, ...]
    cases: int

    @property
    def exercised(self) -> int:
        """How many policies decided at least one case."""
        return sum(1 for p in self.policies if p.decided)

    @property
    def fraction(self) -> Fraction:
        """Exercised policies as an exact percentage (100 for a store without policies)."""
        if not self.policies:
            return Fraction(100)
        return Fraction(100 * self.exercised, len(self.policies))

    @property
    def never_exercised(self) -> list[PolicyInfo]:
        """Policies no case made determining."""
        return [p.info for p in self.policies if not p.decided]


def measure(
    snapshot: PolicySnapshot, store_ids: Iterable[str], results: Iterable[CaseResult]
) -> list[StoreCoverage]:
    """Coverage of each store in ``store_ids`` by the given results."""
    decided: Counter[tuple[str, str]] = Counter()
    errored: Counter[tuple[str, str]] = Counter()
    cases: Counter[str] = Counter()
    for result in results:
        store_id = result.case.request.store_id
        cases[store_id] += 1
        # A permit is determining only in an ALLOW and a forbid only in a DENY it caused.
        decided.update((store_id, p) for p in set(result.outcome.determining))
        errored.update((store_id, p) for p in result.outcome.error_ids)
    report = []
    for store_id in store_ids:
        infos = [p for p in snapshot.stores[store_id].policies.values() if not p.is_template]
        report.append(
            StoreCoverage(
                store_id,
                tuple(
                    PolicyCoverage(p, decided[store_id, p.id], errored[store_id, p.id])
                    for p in infos
                ),
                cases[store_id],
            )
        )
    return report


def parse_percent(text: str) -> Fraction:
    """A percentage from 0 to 100, read exactly (``99.5`` is 199/2, never a float)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite() or not 0 <= value <= 100:
        raise ValueError(f"{text!r} is not a percentage from 0 to 100")
    return Fraction(value)


def format_percent(value: Fraction) -> str:
    """Truncated (never rounded up) to two decimals: 99.999...% shows as 99.99%."""
    hundredths = math.floor(value * 100)
    whole, part = divmod(hundredths, 100)
    return f"{whole}%" if part == 0 else f"{whole}.{part:02d}%"

"""Policy count against decision time: generated per-partner and per-loan policies (10 to 100,000,
a handful applying to each request), in-process ``Authorizer.authorize`` with the policy index,
index build and store load time, peak RSS; for comparison, Cedar with the whole policy set.

Each policy count runs in its own process (peak RSS is per process). Variants: ``scopes`` (uids
only in scopes) and ``named`` (every policy also names uids in its conditions, compared with
``==``: before slices dropped dead weight, each was fetched into every slice).

    .venv/bin/python -m benchmarks.bench_policy_index [--counts 10,1000,10000,100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCHEMA = """
entity Partner;
entity User in [Partner] = { partner: Partner, suspended: Bool };
entity Loan = { partner: Partner, amount: Long };
action view, update appliesTo { principal: [User], resource: [Loan], context: {} };
"""
PER_PARTNER = 3  # per-partner policies for each partner
REQUESTS = 200  # distinct requests, cycled
ROUNDS = 10


def policies(count: int, named: bool) -> str:
    """``count`` policies: per-partner (3 a partner) and per-loan halves, two global forbids."""
    lines = [
        "forbid(principal, action, resource) when { principal.suspended };",
        'forbid(principal, action == Action::"update", resource)'
        " when { resource.amount > 1000000 };",
    ]
    partners = max(1, count // 2 // PER_PARTNER)
    for i in range(max(0, count - 2)):
        if i % 2 == 0:
            p = (i // 2) % partners
            action = ["view", "update", "view"][(i // 2 // partners) % 3]
            extra = f' && principal.partner == Partner::"p{p}"' if named else ""
            lines.append(
                f'@id("partner-{i}") permit(principal in Partner::"p{p}",'
                f' action == Action::"{action}", resource)'
                f" when {{ resource.amount < {1000 + i}{extra} }};"
            )
        else:
            extra = f' && resource.partner == Partner::"p{(i // 2) % partners}"' if named else ""
            lines.append(
                f'@id("loan-{i}") permit(principal, action in [Action::"view", Action::"update"],'
                f' resource == Loan::"l{i // 2}") when {{ principal.suspended == false{extra} }};'
            )
    return "\n".join(lines) + "\n"


def entities(count: int) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Partners, two users each, and the loans requested; the requests themselves."""
    partners = max(1, count // 2 // PER_PARTNER)
    loans = max(1, count // 2)
    found: list[dict[str, Any]] = []
    wanted: list[tuple[str, str, str]] = []
    for n in range(REQUESTS):
        p = n % partners
        wanted.append((f"u{p}-{n % 2}", ["view", "update"][n % 2], f"l{(n * 7919) % loans}"))
    users = {(u, int(u[1:].split("-")[0])) for u, _, _ in wanted}
    for p in {p for _, p in users}:
        found.append({"uid": {"type": "Partner", "id": f"p{p}"}, "attrs": {}, "parents": []})
    for user, p in users:
        found.append(
            {
                "uid": {"type": "User", "id": user},
                "attrs": {
                    "partner": {"__entity": {"type": "Partner", "id": f"p{p}"}},
                    "suspended": False,
                },
                "parents": [{"type": "Partner", "id": f"p{p}"}],
            }
        )
    for loan in {loan for _, _, loan in wanted}:
        p = (int(loan[1:]) * 2 // 2) % partners
        found.append(
            {
                "uid": {"type": "Loan", "id": loan},
                "attrs": {
                    "partner": {"__entity": {"type": "Partner", "id": f"p{p}"}},
                    "amount": 500,
                },
                "parents": [],
            }
        )
    return found, wanted


def rss_mib() -> float:
    """Peak resident set size of this process."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(count: int, named: bool, full_set: bool) -> dict[str, Any]:
    """Load a generated store of ``count`` policies and time decisions (in this process)."""
    from verdict import cedar
    from verdict.engine.authorizer import Authorizer
    from verdict.engine.evaluate import cedar_request, slice_roots
    from verdict.model import AuthorizationRequest, EntityUid
    from verdict.policy.holder import PolicyHolder
    from verdict.policy.index import PolicyIndex
    from verdict.policy.loader import load_policy_stores
    from verdict.policy.policy_sets import SelectionCacheLimits
    from verdict.store.entity_file import build_entities
    from verdict.store.memory import MemoryEntityStore

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "s"
        root.mkdir()
        (root / "schema.cedarschema").write_text(SCHEMA)
        (root / "policies.cedar").write_text(policies(count, named))
        graph, wanted = entities(count)
        started = time.perf_counter()
        snapshot = load_policy_stores(Path(folder), "s")
        load_seconds = time.perf_counter() - started
    store = snapshot.resolve("s")
    index = store.index
    started = time.perf_counter()
    PolicyIndex(list(index._entries), {}, {}, SelectionCacheLimits())
    index_seconds = time.perf_counter() - started
    rss_loaded = rss_mib()
    memory = MemoryEntityStore({"s": build_entities(graph, store.schema)})
    authorizer = Authorizer(PolicyHolder(snapshot), memory)
    requests = [
        AuthorizationRequest(
            EntityUid("User", u), EntityUid("Action", a), EntityUid("Loan", r), {}, "s"
        )
        for u, a, r in wanted
    ]

    async def timed() -> tuple[list[float], list[float], int]:
        cold: list[float] = []
        warm: list[float] = []
        allowed = 0
        for round_ in range(ROUNDS):
            for request in requests:
                started = time.perf_counter()
                result = await authorizer.authorize(request)
                (cold if round_ == 0 else warm).append(time.perf_counter() - started)
                allowed += result.allowed
        return cold, warm, allowed

    cold, warm, allowed = asyncio.run(timed())
    row: dict[str, Any] = {
        "policies": count,
        "variant": "named" if named else "scopes",
        "load_s": round(load_seconds, 2),
        "index_build_s": round(index_seconds, 3),
        "rss_loaded_mib": round(rss_loaded),
        "p50_us": round(statistics.median(warm) * 1e6),
        "p99_us": round(statistics.quantiles(warm, n=100)[98] * 1e6),
        "first_pass_p50_us": round(statistics.median(cold) * 1e6),
        "allow_share": round(allowed / (len(requests) * ROUNDS), 2),
        "slice_roots": len(slice_roots(requests[0], store)),
        "named_uids": len(store.literal_uids),
    }
    if full_set:
        # The whole policy set (what every decision paid before the index), same slices.
        whole = store.policy_set
        times = []
        for request in requests[:50]:
            entity_slice = asyncio.run(memory.fetch_slice("s", slice_roots(request, store)))
            started = time.perf_counter()
            cedar.is_authorized(
                cedar_request(request), whole, list(entity_slice.entities.values()), store.schema
            )
            times.append(time.perf_counter() - started)
        row["full_set_cedar_p50_us"] = round(statistics.median(times) * 1e6)
    row["rss_peak_mib"] = round(rss_mib())
    return row


def main() -> None:
    """Run each policy count and variant in a child process and print one JSON row each."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="10,1000,10000,100000")
    parser.add_argument("--variants", default="scopes,named")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        count, variant = args.one.split(":")
        row = run_one(int(count), variant == "named", int(count) <= 10_000)
        print(json.dumps(row))
        return
    for variant in args.variants.split(","):
        for count in args.counts.split(","):
            child = [
                sys.executable,
                "-m",
                "benchmarks.bench_policy_index",
                "--one",
                f"{count}:{variant}",
            ]
            out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            print(out.strip(), flush=True)


if __name__ == "__main__":
    main()

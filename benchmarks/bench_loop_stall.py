"""Event-loop time under hostile entity shapes, and what the entity limits are chosen from.

Three measurements, one run, one machine:

1. Cedar's cost per hierarchy shape (chains of 50-1,000 entities, members under a chain, flat
   slices): the numbers the defaults of ``max_hierarchy_depth``, ``max_hierarchy_pairs`` and
   ``max_slice_entities`` come from.
2. The longest event-loop stall while a valid 10,000-entity PutEntities runs beside live
   decisions: validation on the loop as before (one Cedar call over all entities, synchronous
   graph checks) against now (worker thread, Cedar in chunks).
3. The loop time of one request at the default limits, for each hostile shape the limits
   allow: the longest chain, the most inline entities, the largest closure, the largest slice,
   many references; and the longest stall during a batch of such requests.

    .venv/bin/python -m benchmarks.bench_loop_stall            # ~1 min
    .venv/bin/python -m benchmarks.bench_loop_stall --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.bench_entity_store import POLICIES, machine_info
from tests.cases import lending_cases
from tests.stores import entity, write_store
from verdict import cedar
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.app import App, build_app, settle_heap
from verdict.cedar_json import entity_references, entity_uid, parse_entities_json
from verdict.client import build_request
from verdict.config import Settings
from verdict.engine.hierarchy import parents_of
from verdict.model import AuthorizationRequest
from verdict.store.base import StoredEntity
from verdict.transport.convert import RequestLimits, request_from_proto

RESULTS = Path(__file__).parent / "results"
TARGET_MS = 50.0
HOSTILE_POLICIES = (
    '@id("top") permit(principal in G::"top", action, resource);\n'
    '@id("owner") permit(principal, action, resource) when { resource has owner && '
    "resource.owner == principal };\n"
)


def employee(index: int, parents: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """A lending-sized entity (~250 bytes of JSON, one entity reference)."""
    attrs = {
        "name": f"Employee {index}",
        "partner": {"__entity": {"type": "Partner", "id": "first-river-bank"}},
        "department": "Retail Lending",
        "approval_limit": 50000,
        "suspended": False,
    }
    roles = [("Role", "loan_officer")] if parents is None else parents
    return entity("Employee", f"e{index}", attrs, parents=roles)


def chain(count: int, prefix: str = "c", top: str = "top") -> list[dict[str, Any]]:
    """G::<prefix>0 -> ... -> G::<prefix>{count-1} -> G::top."""
    return [
        entity("G", f"{prefix}{i}", parents=[("G", f"{prefix}{i + 1}" if i + 1 < count else top)])
        for i in range(count)
    ]


def best_ms(work: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(min, max) milliseconds of ``work`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return min(times), max(times)


# 1. Cedar's own cost per shape ---------------------------------------------------------------


def cedar_costs(stores: Path, quick: bool) -> list[dict[str, Any]]:
    """Milliseconds of one cedarpy call (GIL held throughout) per entity shape."""
    store = build_app(Settings(stores=stores, default_store="hostile")).policies.current
    policies = store.resolve("hostile").policy_set
    request = {
        "principal": {"type": "G", "id": "c0"},
        "action": {"type": "Action", "id": "read"},
        "resource": {"type": "Doc", "id": "d"},
        "context": {},
    }
    shapes: list[tuple[str, int, list[dict[str, Any]]]] = []
    for length in (50, 100, 200, 500) if quick else (50, 100, 200, 500, 1000):
        shapes.append((f"chain of {length}", length * (length + 1) // 2, chain(length)))
    for members, depth in ((150, 99), (1000, 20), (1000, 100)):
        group = [entity("G", f"m{i}", parents=[("G", "c0")]) for i in range(members)]
        pairs = members * (depth + 1) + depth * (depth + 1) // 2
        shapes.append((f"{members} members under a chain of {depth}", pairs, chain(depth) + group))
    for count in (1000, 2000, 10_000):
        flat = [employee(i, parents=[]) for i in range(count)]
        shapes.append((f"{count} flat entities", 0, flat))
        roles = [employee(i) for i in range(count)]
        shapes.append((f"{count} entities, one parent each", count, roles))
    rows = []
    for name, pairs, entities in shapes:

        def decide(e: list[dict[str, Any]] = entities) -> object:
            return cedar.is_authorized(request, policies, e, None)

        fastest, _ = best_ms(decide, 3)
        rows.append({"shape": name, "entities": len(entities), "pairs": pairs, "ms": fastest})
        print(f"  cedar  {name:<40} {fastest:9.2f} ms")
    return rows


# 2. A 10,000-entity write beside live decisions ----------------------------------------------


def write_payload(count: int) -> str:
    return json.dumps([employee(i) for i in range(count)])


def validate_on_loop(app: App, text: str) -> list[StoredEntity]:
    """The previous write path, as it ran on the event loop: parse, one Cedar schema check
    over every entity, the per-entity cycle walk, then the stored form."""
    store = app.policies.current.resolve("lending")
    entities = parse_entities_json(text, max_depth=64)
    uids = [entity_uid(e) for e in entities]
    assert cedar.entity_problem(entities, store.schema) is None
    parents = {uid: parents_of(e) for uid, e in zip(uids, entities, strict=True)}
    for uid in uids:  # the old _reaches(): a walk up from every written entity
        stack, seen = list(parents.get(uid, [])), set()
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack.extend(parents.get(parent, []))
    return [StoredEntity(u, e, entity_references(e)) for u, e in zip(uids, entities, strict=True)]


async def stall_during(
    work: Callable[[], Awaitable[object]],
    app: App,
    request: AuthorizationRequest,
    pace: float = 0.0,
) -> dict[str, Any]:
    """Run ``work`` beside a 1 ms ticker and decisions (back to back, or one per ``pace``
    seconds); report the stalls."""
    done = asyncio.Event()
    lags: list[tuple[float, float]] = []
    decisions: list[float] = []
    started = time.perf_counter()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            after = time.perf_counter()
            lags.append((after - started, (after - before - 0.001) * 1000))

    async def decide() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await app.authorizer.authorize(request)
            decisions.append((time.perf_counter() - before) * 1000)
            await asyncio.sleep(pace)

    async def run() -> float:
        await asyncio.sleep(0.2)
        begin = time.perf_counter()
        await work()
        seconds = time.perf_counter() - begin
        await asyncio.sleep(0.2)
        done.set()
        return seconds

    seconds, *_ = await asyncio.gather(run(), ticker(), decide())
    worst = sorted(lag for _, lag in lags)
    return {
        "write_s": seconds,
        "max_lag_ms": worst[-1],
        "p99_lag_ms": worst[int(len(worst) * 0.99)],
        "max_decision_ms": max(decisions),
        "decisions": len(decisions),
        "lag_trace": lags,
    }


WRITE_VARIANTS = {
    # label: (validate on the loop as before, seconds between decisions, garbage collector on)
    "before": (True, 0.0, True),
    "now": (False, 0.0, True),
    "now, decisions every 2 ms": (False, 0.002, True),
}


async def write_stalls(count: int) -> dict[str, Any]:
    """The same write validated on the loop (before) and off it (now), each on a fresh app,
    beside back-to-back decisions (a saturated loop) or paced ones."""
    text = write_payload(count)
    results: dict[str, Any] = {}
    app = build_app(Settings(stores=POLICIES, default_store="lending"))
    started = time.perf_counter()
    await app.writes.put("lending", text)
    results["now_unloaded_s"] = time.perf_counter() - started
    print(f"  write  now, no concurrent decisions: {results['now_unloaded_s']:.2f} s")
    decision = next(c.request for c in lending_cases() if c.expect == "allow")
    for label, (on_loop, pace, collect) in WRITE_VARIANTS.items():
        gc.unfreeze()  # the previous variant's app is garbage now
        app = build_app(Settings(stores=POLICIES, default_store="lending"))
        settle_heap()  # as app.start does

        async def work(app: App = app, on_loop: bool = on_loop) -> object:
            if on_loop:
                return await app.entities.put("lending", validate_on_loop(app, text))
            return await app.writes.put("lending", text)

        if not collect:
            gc.disable()
        try:
            results[label] = r = await stall_during(work, app, decision, pace)
        finally:
            gc.enable()
        print(
            f"  write  {label:<27} {count} entities: {r['write_s']:.2f} s, max loop lag "
            f"{r['max_lag_ms']:.1f} ms, p99 {r['p99_lag_ms']:.1f} ms, slowest decision "
            f"{r['max_decision_ms']:.1f} ms"
        )
    return results


# 3. One hostile request at the default limits ------------------------------------------------


def fan_out(doc: str, members: list[str], per_hub: int) -> list[dict[str, Any]]:
    """Doc::<doc> -> hubs -> members, each hub within the entity size limit: how stored data,
    not the caller, can make one request's slice large."""
    hubs = []
    for start in range(0, len(members), per_hub):
        part = members[start : start + per_hub]
        name = f"{doc}-hub{start // per_hub}"
        hubs.append(entity("Hub", name, refs("Employee", part)))
    return [*hubs, entity("Doc", doc, refs("Hub", [h["uid"]["id"] for h in hubs]))]


def slice_members(settings: Settings) -> int:
    """Members that fit a slice with their hubs, the document, principal, role and partner."""
    return settings.max_slice_entities * 99 // 100 - 10


def hostile_store(root: Path, settings: Settings) -> None:
    """Stored data at the limits: a chain as deep as allowed with members under it, the
    largest slices of flat and of one-parent entities, and entities of the largest size."""
    depth = settings.max_hierarchy_depth
    members_allowed = (settings.max_hierarchy_pairs - depth * (depth + 1) // 2) // (depth + 1)
    size = slice_members(settings)
    big = settings.max_entity_bytes - 100
    entities = [
        *chain(depth - 1),  # c0 sits depth - 1 deep; members one more
        *[entity("G", f"m{i}", parents=[("G", "c0")]) for i in range(members_allowed)],
        *[employee(i, parents=[]) for i in range(size)],
        *[employee(size + i) for i in range(size)],
        *fan_out("flat", [f"e{i}" for i in range(size)], 900),
        *fan_out("parented", [f"e{size + i}" for i in range(size)], 900),
        *[entity("Employee", f"big{i}", {"blob": "x" * big}) for i in range(size)],
        *fan_out("big", [f"big{i}" for i in range(100)], 100),
        *fan_out("huge", [f"big{i}" for i in range(size)], 900),
        entity("Doc", "d"),
        entity("Role", "loan_officer"),
        entity("Partner", "first-river-bank"),
    ]
    write_store(
        root,
        "hostile",
        {
            "p.cedar": HOSTILE_POLICIES,
            "entities.json": entities,
            "store.toml": 'request_entity_types = ["G"]\n',
        },
    )


def refs(type_: str, ids: list[str]) -> dict[str, Any]:
    return {"refs": [{"__entity": {"type": type_, "id": i}} for i in ids]}


def hostile_requests(settings: Settings) -> dict[str, pb.IsAuthorizedRequest]:
    """One request per shape, each the largest the default limits let through."""
    depth, inline = settings.max_hierarchy_depth, settings.max_request_entities
    members = (settings.max_hierarchy_pairs - depth * (depth + 1) // 2) // (depth + 1)
    size, references = slice_members(settings), settings.max_request_references

    def ask(principal: str, resource: str = "Doc::d", **kw: Any) -> pb.IsAuthorizedRequest:
        return build_request(principal, "Action::read", resource, store="hostile", **kw)

    return {
        # Inline parents must be inline: the chain ends at an inline root.
        f"inline chain of {inline}": ask(
            "G::x0",
            entities=[*chain(inline - 1, "x", top=f"x{inline - 1}"), entity("G", f"x{inline - 1}")],
        ),
        f"{inline} inline members under a stored chain of {depth - 1} (refused)": ask(
            "G::x0", entities=[entity("G", f"x{i}", parents=[("G", "c0")]) for i in range(inline)]
        ),
        f"closure at the limit: {members} members x {depth} deep": ask(
            "G::m0", context=refs("G", [f"m{i}" for i in range(members)])
        ),
        f"stored slice of {size} flat entities": ask("Employee::nobody", "Doc::flat"),
        f"stored slice of {size} entities with a parent": ask("Employee::nobody", "Doc::parented"),
        f"{references} unknown references": ask(
            "G::m0", context=refs("Nobody", [f"n{i}" for i in range(references)])
        ),
        "60,000 unknown references (refused)": ask(
            "G::m0", context=refs("Nobody", [f"n{i}" for i in range(60_000)])
        ),
        f"stored slice of 100 entities of {settings.max_entity_bytes // 1024} KiB": ask(
            "Employee::nobody", "Doc::big"
        ),
        f"stored slice of {size} entities of {settings.max_entity_bytes // 1024} KiB": ask(
            "Employee::nobody", "Doc::huge"
        ),
    }


async def request_times(app: App, repeat: int) -> list[dict[str, Any]]:
    """Loop time of one request (conversion, slice, checks, Cedar) per hostile shape."""
    rows = []
    depth = app.settings.max_context_depth
    for name, message in hostile_requests(app.settings).items():
        times, outcome = [], ""
        for _ in range(repeat):
            started = time.perf_counter()
            try:
                result = await app.authorizer.authorize(
                    request_from_proto(message, RequestLimits(max_depth=depth))
                )
                outcome = result.decision.value
            except Exception as exc:  # a refusal is an outcome too: report what it cost
                outcome = f"{type(exc).__name__}: {exc}"[:80]
            times.append((time.perf_counter() - started) * 1000)
        rows.append({"shape": name, "ms": min(times), "max_ms": max(times), "outcome": outcome})
        print(f"  request {name:<55} {min(times):8.1f} ms  {outcome}")
    return rows


async def batch_stall(app: App, times: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of max_batch_size copies of the heaviest allowed request: the longest stall."""
    messages = hostile_requests(app.settings)
    # The heaviest decided shape that the entity count and hierarchy limits bound (the byte
    # size of a slice is not bounded yet: see README).
    decided = [r for r in times if r["outcome"] in ("allow", "deny") and "KiB" not in r["shape"]]
    heaviest = max(decided, key=lambda r: r["ms"])
    requests = [request_from_proto(messages[heaviest["shape"]])] * app.settings.max_batch_size
    small = build_request("G::m0", "Action::read", "Doc::d", store="hostile")

    async def work() -> object:
        return await app.authorizer.authorize_batch(requests)

    result = await stall_during(work, app, request_from_proto(small))
    result["shape"] = heaviest["shape"]
    print(
        f"  batch  {len(requests)} x heaviest: {result['write_s']:.2f} s,"
        f" max loop lag {result['max_lag_ms']:.1f} ms"
    )
    return result


# Output --------------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> None:
    fig, (costs, stall, worst) = plt.subplots(
        1, 3, figsize=(21, 6), gridspec_kw={"width_ratios": [1, 1, 1.1]}
    )
    chains = [r for r in report["cedar"] if r["shape"].startswith("chain")]
    costs.plot([r["pairs"] for r in chains], [r["ms"] for r in chains], "o-", label="chains")
    for r in chains:
        costs.annotate(r["shape"].removeprefix("chain of "), (r["pairs"], r["ms"]))
    members = [r for r in report["cedar"] if "members" in r["shape"]]
    costs.plot([r["pairs"] for r in members], [r["ms"] for r in members], "s", label="members")
    costs.axhline(TARGET_MS, color="red", linestyle=":", label="50 ms target")
    costs.axvline(report["limits"]["max_hierarchy_pairs"], color="grey", linestyle="--")
    costs.set(xscale="log", yscale="log", xlabel="entity-ancestor pairs", ylabel="ms per call")
    costs.set_title("Cedar: one call, GIL held")
    costs.legend()
    for mode, style in (("before", "r-"), ("now", "g-"), ("now, decisions every 2 ms", "b-")):
        trace = report["write"][mode]["lag_trace"]
        times, values = [t for t, _ in trace], [lag for _, lag in trace]
        stall.plot(times, values, style, label=mode, lw=0.8, drawstyle="steps-pre")
    stall.set(xlabel="seconds", ylabel="event-loop lag (ms)")
    stall.set_title("Loop lag during a 10,000-entity PutEntities")
    stall.legend()
    rows = report["requests"]
    colors = ["indianred" if r["ms"] > TARGET_MS else "steelblue" for r in rows]
    worst.barh([r["shape"] for r in rows], [r["ms"] for r in rows], color=colors)
    for position, row in enumerate(rows):
        worst.annotate(f" {row['ms']:.0f}", (row["ms"], position), va="center")
    worst.axvline(TARGET_MS, color="red", linestyle=":")
    worst.set(xlabel="ms of loop time (min of runs)", xscale="log")
    worst.set_title("One request at the default limits")
    worst.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory() as folder:
        stores = Path(folder)
        hostile_store(stores, settings)
        print("1. Cedar cost per shape")
        cedar_rows = cedar_costs(stores, args.quick)
        print("2. A 10,000-entity write beside decisions")
        write = await write_stalls(2000 if args.quick else 10_000)
        print("3. One hostile request at the default limits")
        gc.unfreeze()
        app = build_app(settings.model_copy(update={"stores": stores, "default_store": "hostile"}))
        settle_heap()
        requests = await request_times(app, 3 if args.quick else 5)
        batch = await batch_stall(app, requests)
    limits = {k: v for k, v in settings.model_dump().items() if k.startswith("max_")}
    report = {
        "machine": machine_info(),
        "limits": limits,
        "cedar": cedar_rows,
        "write": write,
        "requests": requests,
        "batch": {k: v for k, v in batch.items() if k != "lag_trace"},
        "worst_request_ms": max(r["ms"] for r in requests),
        "median_request_ms": statistics.median(r["ms"] for r in requests),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(report, args.out / "loop_stall.png")
    for mode in (report["write"][label] for label in WRITE_VARIANTS):
        mode["lag_trace"] = [(round(t, 4), round(lag, 3)) for t, lag in mode["lag_trace"][::10]]
    (args.out / "loop_stall.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'loop_stall.json'} and loop_stall.png")


if __name__ == "__main__":
    asyncio.run(main())

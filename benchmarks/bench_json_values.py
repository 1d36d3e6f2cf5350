"""What a JSON value costs on the event loop, the value limits derived from it, and the loop
time of each attack shape of attack round 3.

1. Cost per value, CPU time of this thread (immune to other work descheduling us), per value
   shape: Python (parse, walks, the whole decision path) and Cedar (a context converted for
   evaluation; inline entities checked and evaluated; a written entity's schema check).
2. The limits that keep a request at the limits within 50 ms of loop time, from those costs.
3. The longest event-loop stall, through a real server on loopback (memory store, default
   settings), while one attack request runs: the shapes of the attack round, full-size (4 MiB)
   refusals, and the largest requests the limits accept. ``--stalls-only`` runs on code
   without the value limits too (the "before" figures: ``--label before``).

    .venv/bin/python -m benchmarks.bench_json_values            # ~2 min
    .venv/bin/python -m benchmarks.bench_json_values --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.bench_entity_store import cpu_snapshot, machine_info, other_cpu_share
from tests.security.input_server import Served, outcome, serve_stores, uid
from tests.stores import entity, write_store
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.config import Settings

RESULTS = Path(__file__).parent / "results"
TARGET_MS = 50.0
POLICY = '@id("ctx") permit(principal, action, resource) when { context has ok };\n'
STORE: dict[str, str | list[Any]] = {
    "p.cedar": POLICY,
    "entities.json": [entity("User", "u"), entity("Doc", "d")],
    "store.toml": 'request_entity_types = ["Doc"]\n',
}


def ext(fn: str, arg: Any) -> dict[str, Any]:
    key = "args" if isinstance(arg, list) else "arg"
    return {"__extn": {"fn": fn, key: arg}}


# Value shapes: one unit per index (the unit's JSON values are counted, not assumed).
SHAPES: dict[str, Callable[[int], Any]] = {
    "long": lambda i: i,
    "bool": lambda i: True,
    "string": lambda i: f"s{i}",
    "empty list": lambda i: [],
    "empty record": lambda i: {},
    "nested lists [[[[[i]]]]]": lambda i: [[[[[i]]]]],
    'record {"a":i,"b":[i,i]}': lambda i: {"a": i, "b": [i, i + 1]},
    "entity reference": lambda i: {"__entity": {"type": "User", "id": f"u{i}"}},
    "decimal": lambda i: ext("decimal", "1.2500"),
    "ip": lambda i: ext("ip", "10.0.0.1/24"),
    "datetime": lambda i: ext("datetime", "2025-03-04T10:00:00.123+0100"),
    "duration": lambda i: ext("duration", "1d2h3m4s5ms"),
    "offset(datetime, duration)": lambda i: ext(
        "offset", [ext("datetime", "2025-03-04"), ext("duration", "1h")]
    ),
}


def count_values(value: Any) -> int:
    """JSON values in ``value``: containers and scalars (object keys are not values)."""
    if isinstance(value, dict):
        return 1 + sum(count_values(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(count_values(v) for v in value)
    return 1


def units(shape: str, values: int) -> list[Any]:
    """As many units of ``shape`` as fit in ``values`` JSON values."""
    make = SHAPES[shape]
    return [make(i) for i in range(max(1, values // count_values(make(0))))]


def cpu_us(work: Callable[[], object], repeat: int) -> float:
    """Fewest microseconds of this thread's CPU ``work`` took over ``repeat`` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time_ns()
        work()
        best = min(best, (time.thread_time_ns() - started) / 1000)
    return best


def run_now(coroutine: Any) -> Any:
    """Run a coroutine that never suspends (the memory store's path) without an event loop,
    so that its CPU time is the decision's alone."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("the decision suspended")


# 1. Cost per value -----------------------------------------------------------------------------


def shape_costs(shape: str, size: int, repeat: int, app: Any) -> dict[str, Any]:
    """Microseconds per JSON value of ``shape`` on each path, at about ``size`` values."""
    from verdict import cedar
    from verdict.cedar_json import check_record
    from verdict.json_values import _Limits, _parse_scanning, parse_json
    from verdict.transport.convert import RequestLimits, request_from_proto

    items = units(shape, size)
    context = {"l": items}
    values = count_values(context)
    text = json.dumps(context)
    docs = [entity("Doc", f"x{k}", {"l": items[k::10]}) for k in range(10)]
    inline_values = count_values(docs)
    store = app.policies.current.resolve("s")
    roomy = RequestLimits(
        max_references=10**6,
        max_context_values=10**7,
        max_entity_values=10**7,
        max_batch_values=10**7,
    )

    def request(context_json: str = "", entities_json: str = "") -> pb.IsAuthorizedRequest:
        return pb.IsAuthorizedRequest(
            principal=uid("User::u"),
            action=uid("Action::read"),
            resource=uid("Doc::d"),
            context_json=context_json,
            entities_json=entities_json,
        )

    def decide(message: pb.IsAuthorizedRequest) -> None:
        run_now(app.authorizer.authorize(request_from_proto(message, roomy)))

    def cedar_call(ctx: Any, entities: list[Any]) -> None:
        cedar.is_authorized(
            {
                "principal": {"type": "User", "id": "u"},
                "action": {"type": "Action", "id": "read"},
                "resource": {"type": "Doc", "id": "d"},
                "context": ctx,
            },
            store.policy_set,
            entities,
            None,
        )

    limits = _Limits("context_json", 32, None, None, None)
    base_decision = cpu_us(lambda: decide(request()), repeat)
    base_cedar = cpu_us(lambda: cedar_call({}, []), repeat)
    context_message = request(text)
    inline_message = request(entities_json=json.dumps(docs))
    per_value = {
        "parse_json_loads": cpu_us(lambda: parse_json(text, "c", 32, 10**7), repeat) / values,
        "parse_scanner": cpu_us(lambda: _parse_scanning(text, limits, 10**7), repeat) / values,
        "record_walk": cpu_us(lambda: check_record(context, "c"), repeat) / values,
        "context_decision": (cpu_us(lambda: decide(context_message), repeat) - base_decision)
        / values,
        "context_cedar": (cpu_us(lambda: cedar_call(context, []), repeat) - base_cedar) / values,
        "inline_decision": (cpu_us(lambda: decide(inline_message), repeat) - base_decision)
        / inline_values,
        "inline_cedar": (
            cpu_us(lambda: cedar.check_entities(docs, None), repeat)
            + cpu_us(lambda: cedar_call({}, docs), repeat)
            - base_cedar
        )
        / inline_values,
        "write_cedar": cpu_us(lambda: cedar.entity_problem(docs, None), repeat) / inline_values,
    }
    return {
        "shape": shape,
        "values": values,
        "base_decision_us": base_decision,
        "us_per_value": per_value,
    }


def all_costs(stores: Path, sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    from verdict.app import build_app

    app = build_app(Settings(stores=stores, default_store="s"))
    rows = []
    for size in sizes:
        for shape in SHAPES:
            row = shape_costs(shape, size, repeat, app)
            rows.append(row)
            cost = row["us_per_value"]
            print(
                f"  {size:>6} {shape:<28} decision: context {cost['context_decision']:5.2f}"
                f" inline {cost['inline_decision']:5.2f} | cedar: context "
                f"{cost['context_cedar']:5.2f} inline {cost['inline_cedar']:5.2f} write "
                f"{cost['write_cedar']:5.2f} | python: loads {cost['parse_json_loads']:5.2f}"
                f" scanner {cost['parse_scanner']:5.2f} walk {cost['record_walk']:5.2f} us/value"
            )
    return rows


# 2. Limits from the costs ----------------------------------------------------------------------


# The heaviest request the entity limits let through (a stored slice at max_slice_entities):
# 32-35 ms in benchmarks/bench_loop_stall.py. The value limits get what it leaves.
SLICE_MS = 35.0


def floor_500(value: float) -> int:
    """``value`` rounded down to a multiple of 500 (at least 500)."""
    return max(500, int(value) // 500 * 500)


def derive(costs: list[dict[str, Any]]) -> dict[str, Any]:
    """The value limits, from the costliest shape on each path at any measured size:

    - context: realistic lending contexts hold 10-20 values; 1,000 leaves 50x room;
    - inline entities: what a request's budget (TARGET_MS) leaves after a stored slice at its
      limit (SLICE_MS) and a context at its limit;
    - batch: the contexts of a batch's items are converted in one Cedar call together with the
      union of their slices (up to max_slice_entities): that call must stay within TARGET_MS;
    - written entity: converted in every decision that loads it, so no dearer than a context.
    """
    rows = costs
    worst = {
        path: max(rows, key=lambda r: r["us_per_value"][path])
        for path in ("context_decision", "context_cedar", "inline_decision", "write_cedar")
    }
    cost = {path: row["us_per_value"][path] for path, row in worst.items()}
    base_ms = statistics.median(r["base_decision_us"] for r in rows) / 1000
    context_limit = 1_000
    context_ms = context_limit * cost["context_decision"] / 1000
    left_ms = TARGET_MS - SLICE_MS - base_ms - context_ms
    entity_limit = floor_500(left_ms * 1000 / cost["inline_decision"])
    batch_limit = floor_500((TARGET_MS - SLICE_MS) * 1000 / cost["context_cedar"])
    return {
        "target_ms": TARGET_MS,
        "slice_ms": SLICE_MS,
        "base_decision_ms": base_ms,
        "worst_us_per_value": {path: [worst[path]["shape"], cost[path]] for path in worst},
        "max_context_values": context_limit,
        "max_request_entity_values": entity_limit,
        "max_batch_values": batch_limit,
        "max_entity_values": context_limit,
        "context_at_limit_ms": context_ms,
        "inline_at_limit_ms": entity_limit * cost["inline_decision"] / 1000,
        "request_at_all_limits_ms": SLICE_MS
        + base_ms
        + context_ms
        + entity_limit * cost["inline_decision"] / 1000,
        "batch_contexts_in_one_cedar_call_ms": batch_limit * cost["context_cedar"] / 1000,
        "batch_values_all_paths_ms": batch_limit * cost["inline_decision"] / 1000,
        "entity_at_limit_per_decision_ms": context_limit * cost["write_cedar"] / 1000,
        "schema_chunk_ms": 4_000 * cost["write_cedar"] / 1000,
    }


# 3. Loop stalls per attack shape -----------------------------------------------------------


def nested(count: int) -> list[Any]:
    return [[[[[[i]]]]] for i in range(count)]


def ask(context: Any = None, entities: Any = None) -> pb.IsAuthorizedRequest:
    return pb.IsAuthorizedRequest(
        principal=uid("User::u"),
        action=uid("Action::read"),
        resource=uid("Doc::d"),
        context_json=context if isinstance(context, str) else json.dumps(context or {}),
        entities_json=json.dumps(entities) if entities else "",
    )


def write(entities: Any) -> epb.PutEntitiesRequest:
    text = entities if isinstance(entities, str) else json.dumps(entities)
    return epb.PutEntitiesRequest(policy_store_id="s", entities_json=text)


Call = Callable[[Served], Awaitable[Any]]


def attacks(settings: dict[str, int]) -> dict[str, Call]:
    """Each attack request of the round (sizes from its repro notes), full-size refusals, and
    the largest requests the limits accept, as calls on a served store."""
    empty_lists = "[]," * 1_390_000 + "[]"
    offset = SHAPES["offset(datetime, duration)"](0)
    per_item = settings["max_batch_values"] // 100
    # 100 Docs of 7 values (entity, uid of 3, attrs, list, parents), some with an offset (12).
    with_offset = (settings["max_request_entity_values"] - 1 - 700) // 12
    inline = 1 + 700 + 12 * with_offset
    heavy_entity = entity("Blob", "b", {"l": [offset] * 82})  # 991 values

    def authz(request: pb.IsAuthorizedRequest) -> Call:
        return lambda s: s.authz.IsAuthorized(request, timeout=60)

    def batch(items: list[pb.IsAuthorizedRequest]) -> Call:
        message = pb.BatchAuthorizeRequest(requests=items)
        return lambda s: s.authz.BatchAuthorize(message, timeout=60)

    def put(request: epb.PutEntitiesRequest) -> Call:
        return lambda s: s.entities.PutEntities(request, timeout=60)

    return {
        "context: 100k nested lists (1.7 MB)": authz(ask({"l": nested(100_000)})),
        "context: 100k records (3.5 MB)": authz(
            ask({"l": [{"a": i, "b": [i, i + 1]} for i in range(100_000)]})
        ),
        "60 inline Docs of nested lists (3.6 MB)": authz(
            ask(entities=[entity("Doc", f"x{k}", {"l": nested(3_500)}) for k in range(60)])
        ),
        "PutEntities: 60 entities < 64 KiB of nested lists": put(
            write([entity("Blob", f"b{k}", {"l": nested(3_500)}) for k in range(60)])
        ),
        "BatchAuthorize: 100 x 40 KB contexts": batch([ask({"l": nested(2_350)})] * 100),
        "context: 4 MiB of empty lists": authz(ask('{"l": [' + empty_lists + "]}")),
        "PutEntities: one 4 MiB entity of empty lists": put(
            write('[{"uid": {"type": "Blob", "id": "b"}, "attrs": {"l": [' + empty_lists + "]}}]")
        ),
        "at the limit: context of 1,000 offset values": authz(ask({"l": [offset] * 83})),
        f"at the limit: 100 inline Docs, {inline} values": authz(
            ask(
                entities=[
                    entity("Doc", f"x{k}", {"l": [offset] if k < with_offset else []})
                    for k in range(100)
                ]
            )
        ),
        f"at the limit: batch of 100 x {per_item} values": batch(
            [ask({"l": [offset] * ((per_item - 4) // 12)})] * 100
        ),
        "at the limit: PutEntities of 300 x 991 offset values": put(
            write([{**heavy_entity, "uid": {"type": "Blob", "id": f"h{k}"}} for k in range(300)])
        ),
    }


async def worst_lag(served: Served, call: Call) -> dict[str, Any]:
    """The longest the loop was held (1 ms ticker) while ``call`` ran, its duration and
    outcome, and the share of the machine other processes used meanwhile."""
    await served.authz.IsAuthorized(ask(), timeout=5)
    done, lags = False, [0.0]

    async def ticker() -> None:
        while not done:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - started - 0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    before = cpu_snapshot([os.getpid()])
    started = time.perf_counter()
    code, reply = await outcome(call(served))
    seconds = time.perf_counter() - started
    other = other_cpu_share(before, cpu_snapshot([os.getpid()]))
    done = True
    await task
    answer = "OK" if code.name == "OK" else f"{code.name}: {str(reply)[:70]}"
    return {"lag_ms": max(lags) * 1000, "call_s": seconds, "outcome": answer, "other_cpu": other}


async def stalls(stores: Path, repeat: int) -> list[dict[str, Any]]:
    settings = Settings()  # on code without the value limits, the present defaults
    limits = {
        "max_batch_values": getattr(settings, "max_batch_values", 4_000),
        "max_request_entity_values": getattr(settings, "max_request_entity_values", 1_500),
    }
    rows = []
    for name, call in attacks(limits).items():
        runs = []
        for _ in range(repeat):
            async with serve_stores(stores, default_store="s") as served:
                runs.append(await worst_lag(served, call))
        lags = sorted(r["lag_ms"] for r in runs)
        row = {
            "shape": name,
            "lag_ms_min": lags[0],
            "lag_ms_median": statistics.median(lags),
            "call_s_median": statistics.median(r["call_s"] for r in runs),
            "outcome": runs[-1]["outcome"],
            "other_cpu_max": max(r["other_cpu"] for r in runs),
        }
        rows.append(row)
        print(
            f"  {name:<55} loop held {row['lag_ms_min']:8.1f} ms (median "
            f"{row['lag_ms_median']:8.1f}), call {row['call_s_median']:6.2f} s, "
            f"other CPU {row['other_cpu_max']:.0%}: {row['outcome']}"
        )
    return rows


# Output ----------------------------------------------------------------------------------------


def plot(report: dict[str, Any], before: dict[str, Any] | None, path: Path) -> None:
    fig, (costs, lags) = plt.subplots(1, 2, figsize=(18, 7))
    size = min(r["values"] for r in report["costs"])
    rows = [r for r in report["costs"] if r["values"] < size * 2]
    paths = ("context_decision", "inline_decision", "write_cedar")
    width = 0.27
    for offset, key in enumerate(paths):
        xs = [i + offset * width for i in range(len(rows))]
        costs.barh(xs, [r["us_per_value"][key] for r in rows], height=width, label=key)
    costs.set_yticks([i + width for i in range(len(rows))], [r["shape"] for r in rows])
    costs.set(xlabel="us of CPU per JSON value", title=f"Cost per value (~{size} values)")
    costs.legend()
    names = [r["shape"] for r in report["stalls"]]
    now = [max(r["lag_ms_min"], 0.1) for r in report["stalls"]]
    ys = list(range(len(names)))
    lags.barh([y + 0.2 for y in ys], now, height=0.4, color="seagreen", label="now")
    if before is not None:
        old = {r["shape"]: r["lag_ms_min"] for r in before["stalls"]}
        lags.barh(
            [y - 0.2 for y in ys],
            [max(old.get(n, 0.1), 0.1) for n in names],
            height=0.4,
            color="indianred",
            label="before",
        )
    lags.axvline(TARGET_MS, color="black", linestyle=":", label="50 ms target")
    lags.set_yticks(ys, names)
    lags.set(xscale="log", xlabel="longest event-loop stall (ms)", title="One attack request")
    lags.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument("--stalls-only", action="store_true", help="part 3 only")
    parser.add_argument("--label", default="", help="results file suffix, e.g. before")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    suffix = f"_{args.label}" if args.label else ""
    report: dict[str, Any] = {"machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        stores = Path(tmp)
        write_store(stores, "s", STORE)
        if not args.stalls_only:
            print("1. cost per JSON value (CPU time)")
            sizes = [1_000] if args.quick else [1_000, 10_000]
            report["costs"] = all_costs(stores, sizes, 3 if args.quick else 7)
            report["derived"] = derive(report["costs"])
            print("2. limits derived:", json.dumps(report["derived"], indent=1))
        print("3. loop stalls per attack shape")
        report["stalls"] = asyncio.run(stalls(stores, repeat))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"json_values{suffix}.json").write_text(json.dumps(report, indent=1) + "\n")
    if not args.stalls_only:
        before_path = RESULTS / "json_values_before.json"
        before = json.loads(before_path.read_text()) if before_path.exists() else None
        plot(report, before, RESULTS / "json_values.png")


if __name__ == "__main__":
    main()

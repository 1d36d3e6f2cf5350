"""Where a decision's Cedar time goes: cedarpy's cost per request, taken apart, in one run.

On the lending store with the memory store's pre-parsed entity handle (what a decision uses),
each variant evaluates the 25 shared lending requests; the variants run in interleaved rounds
and each figure is the median over rounds of the mean µs per request:

- ``no policies, no context``: the extension's fixed cost of one request (build it, answer);
- ``no policies, lending context``: plus parsing the request's context (mfa, now, source_ip);
- ``no policies, schema``: plus the schema's request checks and typed context (``now`` a
  datetime, ``source_ip`` an ipaddr): what every decision pays before any policy runs;
- ``index selection, schema``: the policies the index selects for each request (what Verdict
  evaluates);
- ``whole store, schema``: every policy of the store (what Cedar alone would evaluate);
- ``index selection, one call of 25``: the same requests in one ``is_authorized_batch`` call
  per distinct selection (what BatchAuthorize does);
- ``extension call only``: cedarpy's Rust entry point without its Python wrapper (JSON of the
  context and of the answer, result objects), to show what the wrapper adds.

Then the engine in process, as the servicer calls it: ``authorize()`` and ``authorize_batch``
of 100 (µs per decision). Run from the repository root:
``.venv/bin/python -m benchmarks.bench_cedar_costs``; writes ``results/cedar_costs.json`` and
``results/cedar_costs.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cedarpy
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.bench_entity_store import POLICIES, RESULTS, expected, machine_info
from tests.cases import lending_cases
from verdict import cedar
from verdict.app import App, build_app
from verdict.config import Settings
from verdict.engine.authorizer import _parents
from verdict.engine.evaluate import cedar_request
from verdict.model import AuthorizationRequest
from verdict.policy.snapshot import StoreSnapshot

BATCH = 100
Variant = Callable[[], object]


async def lending_app() -> App:
    """The lending store on the memory store, its entity handle built."""
    app = build_app(Settings(stores=POLICIES, default_store="lending"))
    await app.entities.prepare()
    return app


async def variants(app: App) -> dict[str, Variant]:
    """Each variant: evaluate every shared lending request once."""
    requests = [case.request for case in lending_cases()]
    snapshot = app.authorizer._policies.current
    store = snapshot.resolve(requests[0].store_id)
    handle, parents = await _handle_and_parents(app, requests)
    documents = [cedar_request(r) for r in requests]
    empty_context = [{**d, "context": {}} for d in documents]
    selections = [
        store.index.select([(r.principal, r.action, r.resource)], parents) for r in requests
    ]
    chosen = [store.index.policy_set(key) for key in selections]
    whole = store.index.policy_set(tuple(range(len(store.index))))
    nothing = cedarpy.PolicySet.from_str("")
    raw_handle = handle.handle
    grouped = _grouped(documents, selections, store)

    def each(policies: Sequence[Any], docs: Sequence[Any], schema: Any) -> Variant:
        def run() -> None:
            for document, policy_set in zip(docs, policies, strict=True):
                cedarpy.is_authorized(document, policy_set, raw_handle, schema)

        return run

    def extension_only() -> None:
        for document, policy_set in zip(documents, chosen, strict=True):
            local = {**document, "context": json.dumps(document["context"])}
            cedarpy._internal.is_authorized_batch(
                [local], policy_set.handle, raw_handle._inner, store.schema, False
            )

    def one_call() -> None:
        for policy_set, docs in grouped:
            cedar.is_authorized_batch(docs, policy_set, handle, store.schema)

    none = [nothing] * len(documents)
    return {
        "no policies, no context": each(none, empty_context, None),
        "no policies, lending context": each(none, documents, None),
        "no policies, schema": each(none, documents, store.schema),
        "index selection, schema": each([p.handle for p in chosen], documents, store.schema),
        "whole store, schema": each([whole.handle] * len(documents), documents, store.schema),
        "index selection, one call of 25": one_call,
        "extension call only": extension_only,
    }


async def _handle_and_parents(
    app: App, requests: Sequence[AuthorizationRequest]
) -> tuple[cedar.EntitiesHandle, dict[Any, Any]]:
    """The store version's entity handle and the ancestry of every request's slice."""
    snapshot = app.authorizer._policies.current
    parents: dict[Any, Any] = {}
    handle = None
    for request in requests:
        prepared = await app.authorizer._prepare(snapshot, request)
        parents.update(_parents(prepared.slice))
        handle = prepared.slice.handle
    if not isinstance(handle, cedar.EntitiesHandle):
        raise RuntimeError("the memory store gave no entity handle")
    return handle, parents


def _grouped(
    documents: Sequence[Any], selections: Sequence[tuple[int, ...]], store: StoreSnapshot
) -> list[tuple[cedar.PolicySetHandle, list[Any]]]:
    groups: dict[tuple[int, ...], list[Any]] = {}
    for document, key in zip(documents, selections, strict=True):
        groups.setdefault(key, []).append(document)
    return [(store.index.policy_set(key), docs) for key, docs in groups.items()]


def interleaved(runs: dict[str, Variant], rounds: int, per_round: int) -> dict[str, float]:
    """µs per request of each variant: median over rounds (variants rotated within rounds)."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for number in range(rounds):
        for name in names[number % len(names) :] + names[: number % len(names)]:
            started = time.perf_counter()
            runs[name]()
            samples[name].append((time.perf_counter() - started) / per_round * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


async def engine(app: App, rounds: int) -> dict[str, float]:
    """authorize() and authorize_batch(100), µs per decision, interleaved."""
    cases = lending_cases()
    singles = [c.request for c in cases]
    batch = [cases[i % len(cases)].request for i in range(BATCH)]
    alone, together = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        for request in singles:
            await app.authorizer.authorize(request)
        alone.append((time.perf_counter() - started) / len(singles) * 1e6)
        started = time.perf_counter()
        await app.authorizer.authorize_batch(batch)
        together.append((time.perf_counter() - started) / BATCH * 1e6)
    return {
        "authorize()": statistics.median(alone),
        f"authorize_batch({BATCH})": statistics.median(together),
    }


def plot(figures: dict[str, Any], out: Path) -> None:
    """Horizontal bars, µs per request, Cedar variants then the engine."""
    cedar_figures: dict[str, float] = figures["cedar_us_per_request"]
    engine_figures: dict[str, float] = figures["engine_us_per_decision"]
    labels = [*cedar_figures, *engine_figures]
    values = [*cedar_figures.values(), *engine_figures.values()]
    colors = ["#8ab"] * len(cedar_figures) + ["#357"] * len(engine_figures)
    fig, axis = plt.subplots(figsize=(9, 4.8))
    axis.barh(labels[::-1], values[::-1], color=colors[::-1])
    for y, value in enumerate(values[::-1]):
        axis.annotate(f"{value:,.1f}", (value, y), va="center", fontsize=8)
    axis.set_xlabel("µs per request (median over interleaved rounds)")
    axis.set_title("Lending store, pre-parsed entities: cedarpy per request, and the engine")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


async def run(rounds: int) -> dict[str, Any]:
    """Every figure of one run; a wrong answer of the engine stops it."""
    app = await lending_app()
    for case in lending_cases():
        result = await app.authorizer.authorize(case.request)
        if not expected(case, result.allowed, result.determining_policies):
            raise RuntimeError(f"wrong answer for {case}")
    runs = await variants(app)
    for variant in runs.values():  # warm every policy-set cache and the extension
        variant()
    return {
        "cedar_us_per_request": interleaved(runs, rounds, len(lending_cases())),
        "engine_us_per_decision": await engine(app, rounds),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print and write results/cedar_costs.{json,png}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.rounds))
    figures["machine"] = machine_info()
    figures["plan"] = {"rounds": args.rounds, "requests": len(lending_cases()), "batch": BATCH}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cedar_costs.json").write_text(json.dumps(figures, indent=2) + "\n")
    plot(figures, args.out / "cedar_costs.png")
    for section in ("cedar_us_per_request", "engine_us_per_decision"):
        for name, value in figures[section].items():
            print(f"{value:9.1f} µs  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

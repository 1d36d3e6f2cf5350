"""Benchmark ``verdict test``: 10,000 generated cases over the lending store, YAML and JSON.

Run from the repository root: ``.venv/bin/python benchmarks/bench_policy_tests.py``.
Writes ``benchmarks/results/policy_tests.json`` and ``benchmarks/results/policy_tests.png``.

Expectations are produced by the server's own path (``Authorizer.authorize``), so every case
must pass; the timed runs then use the runner's default (server batches through
``Authorizer.authorize_batch``, as BatchAuthorize) and, side by side, ``--per-request`` (each
case alone through ``Authorizer.authorize``, as IsAuthorized).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from verdict.app import entity_files
from verdict.engine.authorizer import Authorizer
from verdict.errors import VerdictError
from verdict.model import AuthorizationRequest, EntityUid
from verdict.policy.holder import PolicyHolder
from verdict.policy.loader import load_policy_stores
from verdict.policytest.loader import discover, load_plan
from verdict.policytest.runner import run_plan
from verdict.store.memory import MemoryEntityStore

ROOT = Path(__file__).resolve().parent.parent
STORES = ROOT / "policies"
RESULTS = ROOT / "benchmarks" / "results"
VERDICT = Path(sys.executable).parent / "verdict"

BORROWERS = ["alice", "bob", "carol", "dave", "erin"]
EMPLOYEES = [
    "olivia",
    "liam",
    "uma",
    "sam",
    "victor",
    "sophie",
    "cora",
    "adam",
    "oscar",
    "hannah",
    "mike",
]
LOANS = [
    "loan-1001",
    "loan-1002",
    "loan-1003",
    "loan-1004",
    "loan-1005",
    "loan-1006",
    "loan-1007",
    "loan-1008",
    "loan-1009",
    "loan-2001",
    "loan-2002",
    "loan-3001",
]
DOCUMENTS = [
    "doc-1001-paystub",
    "doc-1001-passport",
    "doc-1004-tax-return",
    "doc-2001-paystub",
    "doc-2001-drivers-license",
]
# action -> (principal types allowed, resource type), as in the lending schema.
ACTIONS = {
    "view": ("both", "Loan"),
    "update": ("both", "Loan"),
    "submit": ("both", "Loan"),
    "upload_document": ("both", "Loan"),
    "approve": ("Employee", "Loan"),
    "reject": ("Employee", "Loan"),
    "disburse": ("Employee", "Loan"),
    "view_document": ("both", "Document"),
    "view_pii": ("Employee", "Document"),
}
TIMES = [
    "2025-03-04T07:59:59Z",
    "2025-03-04T08:00:00Z",
    "2025-03-04T10:00:00Z",
    "2025-03-04T17:59:59Z",
    "2025-03-04T18:00:00Z",
    "2025-03-04T22:30:00Z",
]
IPS = ["10.20.0.5", "10.0.0.1", "203.0.113.7", None]


def generate(count: int, seed: int) -> list[dict[str, Any]]:
    """Random, schema-valid lending cases (without expectations yet)."""
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        action = rng.choice(list(ACTIONS))
        principals, resource_type = ACTIONS[action]
        ptype = "Employee" if principals == "Employee" else rng.choice(["Borrower", "Employee"])
        pid = rng.choice(EMPLOYEES if ptype == "Employee" else BORROWERS)
        rid = rng.choice(LOANS if resource_type == "Loan" else DOCUMENTS)
        case: dict[str, Any] = {
            "name": f"case {index}: {pid} {action} {rid}",
            "principal": f"{ptype}::{pid}",
            "action": f"Action::{action}",
            "resource": f"{resource_type}::{rid}",
            "now": rng.choice(TIMES),
        }
        context: dict[str, Any] = {}
        if rng.random() < 0.3:
            context["mfa"] = False
        ip = rng.choice(IPS)
        if ip != "10.20.0.5":
            context["source_ip"] = ip
        if context:
            case["context"] = context
        cases.append(case)
    return cases


def add_expectations(cases: list[dict[str, Any]]) -> None:
    """Fill ``expect`` from the server's path: one Authorizer.authorize call per case."""
    snapshot = load_policy_stores(STORES, "lending")
    authorizer = Authorizer(
        PolicyHolder(snapshot), MemoryEntityStore.from_files(entity_files(snapshot))
    )
    base = {"mfa": True, "source_ip": "10.20.0.5"}

    async def answer_all() -> None:
        for case in cases:
            context = {**base, **case.get("context", {}), "now": case["now"]}
            context = {k: v for k, v in context.items() if v is not None}
            request = AuthorizationRequest(
                _uid(case["principal"]),
                _uid(case["action"]),
                _uid(case["resource"]),
                context,
                "lending",
            )
            try:
                result = await authorizer.authorize(request)
            except VerdictError:
                case["expect"] = "invalid"
                continue
            policies = sorted(result.determining_policies)
            errors = sorted({e.policy_id for e in result.errors})
            case["expect"] = {
                "decision": result.decision.value,
                "policies": policies,
                **({"errors": errors} if errors else {}),
            }

    asyncio.run(answer_all())


def _uid(text: str) -> EntityUid:
    type_, _, id_ = text.rpartition("::")
    return EntityUid(type_, id_)


def write_suites(cases: list[dict[str, Any]], folder: Path, files: int, fmt: str) -> None:
    """Split the cases over ``files`` suite files in ``folder``."""
    import yaml

    per_file = len(cases) // files
    for number in range(files):
        suite = {
            "name": f"generated {number}",
            "store": "lending",
            "context": {"mfa": True, "source_ip": "10.20.0.5"},
            "cases": cases[number * per_file : (number + 1) * per_file],
        }
        path = folder / f"generated_{number:02d}.{fmt}"
        if fmt == "json":
            path.write_text(json.dumps(suite, indent=2), encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(suite, sort_keys=False, width=120), encoding="utf-8")


def time_in_process(folder: Path, per_request: bool) -> dict[str, float]:
    """Load and evaluate in this process; seconds per phase."""
    started = time.perf_counter()
    snapshot = load_policy_stores(STORES, "lending")
    plan = load_plan(discover([folder], STORES, snapshot), snapshot, STORES)
    loaded = time.perf_counter()
    report = run_plan(plan, plan.cases, per_request=per_request)
    if report.failed:
        raise SystemExit(f"{len(report.failed)} generated cases failed")
    return {
        "load": loaded - started,
        "evaluate": report.seconds,
        "total": time.perf_counter() - started,
        "cases": len(report.results),
    }


def time_subprocess(folder: Path) -> float:
    """Wall time of the real command, interpreter start-up and imports included."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(VERDICT), "test", "--stores", str(STORES), str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"verdict test failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    """Generate, run each variant ``--repeat`` times (median and min), write JSON and PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    cases = generate(args.cases, args.seed)
    add_expectations(cases)
    results: dict[str, Any] = {
        "cases": args.cases,
        "files": args.files,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("yaml", "json"):
            folder = Path(tmp) / fmt
            folder.mkdir()
            write_suites(cases, folder, args.files, fmt)
            runs: dict[str, list[dict[str, float]]] = {"batch": [], "per_request": []}
            walls = []
            for _ in range(args.repeat):  # interleaved, so load spikes hit every variant alike
                for strategy, timings in runs.items():
                    timings.append(time_in_process(folder, strategy == "per_request"))
                walls.append(time_subprocess(folder))
            for strategy, timings in runs.items():
                results["variants"][f"{fmt}/{strategy}"] = _summarise(timings)
            results["variants"][f"{fmt}/batch"]["subprocess_wall"] = {
                "median": statistics.median(walls),
                "min": min(walls),
            }
    variants = results["variants"]
    results["per_request_over_batch_evaluate_min"] = {
        fmt: variants[f"{fmt}/per_request"]["evaluate"]["min"]
        / variants[f"{fmt}/batch"]["evaluate"]["min"]
        for fmt in ("yaml", "json")
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "policy_tests.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "policy_tests.png")
    print(json.dumps(results, indent=2))


def _summarise(timings: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        key: {
            "median": statistics.median(t[key] for t in timings),
            "min": min(t[key] for t in timings),
        }
        for key in ("load", "evaluate", "total")
    }


def plot(results: dict[str, Any], path: Path) -> None:
    """Stacked bars (best of N): load and evaluate time per variant, and the command's wall time."""
    names = list(results["variants"])
    load = [results["variants"][n]["load"]["min"] for n in names]
    evaluate = [results["variants"][n]["evaluate"]["min"] for n in names]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    axes.bar(names, load, label="load suites + policies")
    axes.bar(names, evaluate, bottom=load, label="evaluate cases")
    for index, name in enumerate(names):
        wall = results["variants"][name].get("subprocess_wall", {}).get("min")
        if wall is not None:
            axes.plot([index - 0.4, index + 0.4], [wall, wall], color="black")
            axes.annotate(
                f"verdict test: {wall:.2f}s", (index, wall), ha="center", va="bottom", fontsize=8
            )
    axes.set_ylabel(f"seconds (best of {results['repeat']})")
    axes.set_title(f"verdict test, {results['cases']:,} cases over the lending store")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

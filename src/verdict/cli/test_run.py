"""``verdict test``: load suites, run them, print failures, coverage and JUnit."""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from typing import NoReturn

from verdict.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    choose_store,
    fail,
    refuse_folder,
    unusable,
    write_output,
)
from verdict.cli.remote import connect
from verdict.cli.test_remote import run_remote
from verdict.errors import Diagnostic, PolicyLoadError
from verdict.policy.loader import load_policy_stores
from verdict.policytest.coverage import measure
from verdict.policytest.junit import junit_text
from verdict.policytest.loader import Plan, SuiteLoadError, discover, load_plan
from verdict.policytest.report import (
    below_minimum_line,
    coverage_lines,
    failure_lines,
    summary_line,
    verbose_lines,
)
from verdict.policytest.runner import RunReport, run_plan
from verdict.telemetry.logging import configure_logging

EXIT_PASSED, EXIT_UNUSABLE = EXIT_OK, EXIT_USAGE
JUNIT_EXAMPLE = "report.xml"


def run_test_command(args: argparse.Namespace) -> int:
    """Run ``verdict test`` with parsed arguments; returns the exit code."""
    configure_logging("error", "console")
    if args.server is not None and args.per_request:
        fail("--per-request runs the engine here; with --server the server decides")
    if args.junit is not None:  # before the run, not after it: the run may take a while
        refuse_folder("--junit", args.junit, JUNIT_EXAMPLE)
    try:
        pattern = re.compile(args.filter) if args.filter else None
    except re.error as exc:
        fail(f"--filter is not a valid regular expression: {exc}")
    started = time.perf_counter()
    try:
        snapshot = load_policy_stores(args.stores)
        choose_store(snapshot.stores, args.store)
        plan = load_plan(
            discover(args.paths, args.stores, snapshot), snapshot, args.stores, args.store
        )
    except (PolicyLoadError, SuiteLoadError) as exc:
        _unusable(exc.diagnostics)
    cases = [c for c in plan.cases if pattern is None or pattern.search(c.title)]
    if not cases:
        what = "no case matches --filter" if plan.cases else "no test suites found"
        _unusable([Diagnostic(str(p), 0, what) for p in (args.paths or [args.stores])])
    load_seconds = time.perf_counter() - started
    if args.server is not None:
        with connect(args) as client:
            report = run_remote(client, plan, cases, args.server)
        return _report(args, plan, report, load_seconds)
    try:
        report = run_plan(plan, cases, per_request=args.per_request)
    except Exception:  # a bug, not a failing case: exit 1 must keep meaning "a case failed"
        traceback.print_exc()
        print("internal error while evaluating cases: nothing was reported", file=sys.stderr)
        return EXIT_UNUSABLE
    return _report(args, plan, report, load_seconds)


def _report(args: argparse.Namespace, plan: Plan, report: RunReport, load_seconds: float) -> int:
    lines = verbose_lines if args.verbose else failure_lines
    for line in lines(report, plan.snapshot):
        print(line)
    code = EXIT_FAILED if report.failed else EXIT_PASSED
    if args.coverage or args.min_coverage is not None:
        for coverage in measure(plan.snapshot, _covered_stores(args, plan), report.results):
            if args.coverage:
                print("\n".join(coverage_lines(coverage)))
            if args.min_coverage is not None and coverage.fraction < args.min_coverage:
                print(below_minimum_line(coverage, args.min_coverage))
                code = EXIT_FAILED
    if args.junit is not None:
        text = junit_text(report, plan.suites, plan.snapshot)
        write_output("--junit", args.junit, text, JUNIT_EXAMPLE)
    print(summary_line(report, load_seconds))
    return code


def _covered_stores(args: argparse.Namespace, plan: Plan) -> list[str]:
    # A whole-tree run answers for every store, including stores that have no suites yet.
    if not args.paths:
        return sorted(plan.snapshot.stores)
    return sorted({suite.store_id for suite in plan.suites})


def _unusable(diagnostics: list[Diagnostic]) -> NoReturn:
    unusable(diagnostics, f"{len(diagnostics)} problem(s): nothing was run")

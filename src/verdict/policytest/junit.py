"""JUnit XML for CI systems: one testsuite per suite file, one testcase per case."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from verdict.policy.snapshot import PolicySnapshot
from verdict.policytest.loader import LoadedSuite
from verdict.policytest.report import describe_outcome, failure_line
from verdict.policytest.runner import CaseResult, RunReport


def junit_tree(
    report: RunReport, suites: Sequence[LoadedSuite], snapshot: PolicySnapshot
) -> ET.ElementTree:
    """The JUnit document of a run; suites without selected cases are left out."""
    by_suite: dict[tuple[str, str], list[CaseResult]] = {}
    for result in report.results:
        by_suite.setdefault((result.case.file, result.case.suite), []).append(result)
    root = ET.Element(
        "testsuites",
        name="verdict test",
        tests=str(len(report.results)),
        failures=str(len(report.failed)),
        errors="0",
        time=f"{report.seconds:.3f}",
    )
    for suite in suites:
        results = by_suite.get((suite.file, suite.name), [])
        if results:
            root.append(_suite_element(suite, results, snapshot))
    ET.indent(root)
    return ET.ElementTree(root)


def _suite_element(
    suite: LoadedSuite, results: list[CaseResult], snapshot: PolicySnapshot
) -> ET.Element:
    failures = sum(1 for r in results if not r.passed)
    element = ET.Element(
        "testsuite",
        name=suite.name,
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        skipped="0",
        file=suite.file,
    )
    policies = snapshot.stores[suite.store_id].policies
    classname = f"{suite.store_id}.{Path(suite.file).stem}"
    for result in results:
        case = result.case
        testcase = ET.SubElement(
            element,
            "testcase",
            name=case.name,
            classname=classname,
            file=case.file,
            line=str(case.line),
        )
        if not result.passed:
            failure = ET.SubElement(
                testcase,
                "failure",
                type="PolicyTestFailure",
                message="; ".join(result.judgement.problems),
            )
            failure.text = failure_line(result, policies)
        else:
            ET.SubElement(testcase, "system-out").text = describe_outcome(result.outcome)
    return element


def junit_text(report: RunReport, suites: Sequence[LoadedSuite], snapshot: PolicySnapshot) -> str:
    """The JUnit XML of a run, as the file holds it (UTF-8, with an XML declaration)."""
    buffer = io.BytesIO()
    junit_tree(report, suites, snapshot).write(buffer, encoding="utf-8", xml_declaration=True)
    return buffer.getvalue().decode("utf-8")

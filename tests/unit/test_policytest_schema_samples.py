"""The published JSON Schema accepts every sample suite and rejects malformed ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from verdict.policytest.source import parse_source

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "policy-test-suite.schema.json").read_text())
SUITES = sorted(
    p for p in (ROOT / "policies").glob("*/tests/*.*") if not p.name.endswith(".entities.json")
)


def as_runner_reads_it(path: Path) -> Any:
    """The document the runner validates (its YAML loader keeps times as strings)."""
    return parse_source(path.read_text(), path.name, is_json=path.suffix == ".json").data


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.name)
def test_sample_suites_validate_against_the_published_schema(path: Path) -> None:
    """Editors validating with the schema accept every shipped suite."""
    jsonschema.validate(as_runner_reads_it(path), SCHEMA)


def test_schema_rejects_unknown_keys() -> None:
    """A misspelt key is an error for editors too, as it is for the runner."""
    with pytest.raises(jsonschema.ValidationError, match="casse"):
        jsonschema.validate({"name": "s", "cases": [], "casse": []}, SCHEMA)

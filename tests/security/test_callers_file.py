"""Tests of the callers file: what it grants, how globs match, and file:line load errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.authn_support import token_sha256, write_callers
from verdict.errors import ConfigError
from verdict.transport.callers import MethodGroup, glob_pattern, load_callers

GOOD = f"""
[[callers]]
id = "spiffe://lending.test/ns/loans/**"
methods = ["decisions"]
stores = ["lending"]

[[callers]]
id = "spiffe://lending.test/ns/loans/sa/loan-api"
methods = ["entity-reads"]
stores = ["retail"]

[[callers]]
id = "entity-sync"
methods = ["entity-reads", "entity-writes"]
stores = ["*"]
token_sha256 = ["{token_sha256("sync-token")}"]
"""


def test_grants_add_up_across_matching_entries(tmp_path: Path) -> None:
    """An id matched exactly and by a glob gets both entries' groups and stores."""
    callers = load_callers(write_callers(tmp_path, GOOD))
    grant = callers.grant_for("spiffe://lending.test/ns/loans/sa/loan-api")
    assert grant is not None
    assert grant.groups == {MethodGroup.DECISIONS, MethodGroup.ENTITY_READS}
    assert grant.stores == frozenset({"lending", "retail"})
    sync = callers.grant_for("entity-sync")
    assert sync is not None
    assert sync.stores is None
    assert sync.allows_store("anything")
    assert callers.tokens == {token_sha256("sync-token"): "entity-sync"}


def test_unknown_callers_get_nothing(tmp_path: Path) -> None:
    """An id no entry matches has no grant at all."""
    callers = load_callers(write_callers(tmp_path, GOOD))
    assert callers.grant_for("spiffe://lending.test/ns/other/sa/x") is None
    assert callers.grant_for("entity-sync-2") is None


@pytest.mark.parametrize(
    ("caller", "matches"),
    [
        ("spiffe://lending.test/ns/loans/sa", True),
        ("spiffe://lending.test/ns/loans/", True),
        ("spiffe://lending.test/ns/loans/sa/loan-api", False),
        ("spiffe://lending.test/ns/loansX/sa", False),
        ("spiffe://lending.test/ns/loans", False),
        ("spiffe://evil.test/ns/loans/sa", False),
    ],
)
def test_star_matches_within_one_segment(caller: str, matches: bool) -> None:
    """``*`` never crosses a ``/``: a glob cannot grant deeper paths or other trust domains."""
    assert bool(glob_pattern("spiffe://lending.test/ns/loans/*").match(caller)) is matches


def test_double_star_matches_the_rest() -> None:
    """``**`` matches any number of segments below its prefix, and nothing beside it."""
    pattern = glob_pattern("spiffe://lending.test/ns/loans/**")
    assert pattern.match("spiffe://lending.test/ns/loans/sa/loan-api")
    assert not pattern.match("spiffe://lending.test/ns/loansX/sa")


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ('[[callers]]\nid = "a"\nmethods = ["adm"]\nstores = ["*"]\n', 3, "unknown group"),
        ('[[callers]]\nid = "a"\nmethods = ["admin"]\n', 1, "stores must be a list"),
        ('[[callers]]\nid = "a*"\nmethods = ["admin"]\nstores = ["*"]\n', 2, "spiffe://"),
        ('[[callers]]\nid = "a"\nmethods = []\nstores = ["*"]\n', 3, "must not be empty"),
        ('[[callers]]\nid = "a"\nmethods = ["admin"]\nstores = ["*"]\nrole = 1\n', 5, "role"),
        (
            '[[callers]]\nid = "a"\nmethods = ["admin"]\nstores = ["*"]\ntoken_sha256 = ["x"]\n',
            5,
            "SHA-256",
        ),
        (
            '[[callers]]\nid = "a"\nmethods = ["admin"]\nstores = ["*"]\n\n'
            '[[callers]]\nid = "a"\nmethods = ["admin"]\nstores = ["*"]\n',
            7,
            "listed twice",
        ),
        ('[[callers]]\nid = "a"\nmethods = ["admin"\n', 3, "not valid TOML"),
        ("# nobody\n", 1, "no [[callers]]"),
        (
            '[jwt]\njwks_file = "j.json"\nissuer = ""\naudience = "v"\nalgorithms = ["RS256"]\n'
            '[[callers]]\nid = "a"\nmethods = ["admin"]\nstores = ["*"]\n',
            3,
            "jwt.issuer",
        ),
    ],
)
def test_bad_callers_file_names_file_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    """Every problem in the callers file is reported as callers.toml:<line>: <problem>."""
    path = write_callers(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_callers(path)
    rendered = str(info.value)
    assert f"{path}:{line}:" in rendered, rendered
    assert problem in rendered

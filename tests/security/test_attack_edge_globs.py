"""SPIFFE-id globs against hostile caller ids: long ids built to make a backtracking matcher
explode (a certificate SAN or a JWT ``sub`` an attacker had issued) are matched in linear time,
with the same answers as the documented glob semantics."""

from __future__ import annotations

import random
import re
from pathlib import Path

import grpc
import pytest

from tests.cases import lending_cases
from tests.security.authn_support import Issuer, jwt_table, verdict_app, write_callers
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import bearer, build_request
from verdict.errors import ConfigError
from verdict.transport.callers import glob_pattern, load_callers

CASE = lending_cases()[0]
REQUEST = build_request(CASE.principal, CASE.action, CASE.resource, context=CASE.context)


def reference(glob: str) -> re.Pattern[str]:
    """The documented semantics as a regex (fine for short ids): ``*`` within a segment,
    ``**`` across segments."""
    parts = re.split(r"(\*\*|\*)", glob)
    body = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(f"^{body}$", re.DOTALL)


def test_globs_agree_with_the_documented_semantics() -> None:
    """20,000 random short globs and ids over ``a``, ``b``, ``/`` and stars: same answers."""
    rng = random.Random(14)
    for _ in range(20_000):
        segments = [
            "**" if rng.random() < 0.25 else "".join(rng.choice("ab*") for _ in range(3))
            for _ in range(rng.randint(1, 4))
        ]
        glob = "/".join(s for s in segments if s == "**" or "**" not in s)
        caller = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 9)))
        expected = bool(reference(glob).match(caller))
        assert glob_pattern(glob).match(caller) is expected, (glob, caller)


@pytest.mark.parametrize(
    ("glob", "caller"),
    [
        ("spiffe://t/ns/*a*a*a*b", "spiffe://t/ns/" + "a" * 4000),
        ("spiffe://t/**/sa/**/x/**/admin", "spiffe://t/" + "/sa//x/" * 1000),
        ("spiffe://t/**/*a*a*b", "spiffe://t/" + "a/" * 4000),
    ],
)
def test_backtracking_ids_are_matched_at_once(glob: str, caller: str) -> None:
    """Ids that make ``[^/]*a[^/]*a[^/]*b``-style regexes take hours (a 2 KB id held the
    loop for seconds with three ``**``) are refused by the segment matcher straight away."""
    assert not glob_pattern(glob).match(caller)


def test_a_double_star_inside_a_segment_is_a_config_error(tmp_path: Path) -> None:
    """``loans**`` would silently cross segments: the callers file says where it is wrong."""
    path = write_callers(
        tmp_path,
        '[[callers]]\nid = "spiffe://t/ns/loans**"\nmethods = ["decisions"]\nstores = ["*"]\n',
    )
    with pytest.raises(ConfigError) as error:
        load_callers(path)
    assert "callers.toml:2: ** must be a whole path segment" in str(error.value)


async def test_a_hostile_jwt_subject_against_a_starry_glob(tmp_path: Path) -> None:
    """A JWT whose ``sub`` is 3,000 characters aimed at a many-star glob gets its answer
    (PERMISSION_DENIED) instead of freezing the server."""
    issuer = Issuer(tmp_path)
    text = jwt_table(issuer) + (
        '\n[[callers]]\nid = "spiffe://lending.test/ns/*a*a*a*b"\nmethods = ["decisions"]\n'
        'stores = ["*"]\n'
    )
    callers = write_callers(tmp_path, text)
    token = issuer.token("spiffe://lending.test/ns/" + "a" * 3000)
    async with verdict_app(callers_file=callers) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.IsAuthorized(REQUEST, metadata=bearer(token), timeout=30)
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

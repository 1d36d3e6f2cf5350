"""A file in a policy store larger than its bound is refused unread, naming the file and the
bound: at start (validate, serve), at a hot reload (the last good version serves on) and by
`verdict entities load` (Redis untouched). Without the bound it was read whole and parsed, and
the process died for memory instead (policy/file_limits.py).

The files are sparse: one byte past the bound costs no disk and, refused on their size, no read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_entities_load import lending_entities
from benchmarks.hot_path.gen_store import Shape, policy_text
from tests.processes import free_port
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.serve_process import serve_command
from tests.stores import lending_copy, sparse
from verdict.policy.file_limits import MAX_ENTITIES_FILE_BYTES, MAX_POLICY_FILE_BYTES
from verdict.store.redis_keys import StoreKeys

# Each file a store reads, and its bound.
BOUNDED = [
    ("big.cedar", MAX_POLICY_FILE_BYTES, "64 MiB"),
    ("loans/big.cedar", MAX_POLICY_FILE_BYTES, "64 MiB"),
    ("schema.cedarschema", MAX_POLICY_FILE_BYTES, "64 MiB"),
    ("store.toml", MAX_POLICY_FILE_BYTES, "64 MiB"),
    ("links.json", MAX_POLICY_FILE_BYTES, "64 MiB"),
    ("entities.json", MAX_ENTITIES_FILE_BYTES, "512 MiB"),
]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; a hang (or a read of the whole file) shows up as TimeoutExpired."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(("name", "bound", "shown"), BOUNDED, ids=[b[0] for b in BOUNDED])
def test_validate_and_serve_refuse_an_oversized_store_file(
    tmp_path: Path, name: str, bound: int, shown: str
) -> None:
    """`verdict validate` exits 1 and `verdict serve` exits 2, each naming the file and its
    bound; nothing is served."""
    stores = lending_copy(tmp_path)
    sparse(stores / "lending" / name, bound + 1)
    message = f"lending/{name}:0: "
    validated = run([sys.executable, "-m", "verdict", "validate", "--stores", str(stores)])
    assert validated.returncode == 1, validated.stdout
    assert message in validated.stderr, validated.stderr
    assert f"larger than the limit of {shown}" in validated.stderr
    served = run(serve_command(stores, free_port()))
    assert served.returncode == 2, served.stderr
    assert message in served.stderr
    assert "Traceback" not in served.stderr


def test_a_file_at_its_bound_is_read(tmp_path: Path) -> None:
    """The bound is inclusive: a policy file of exactly 64 MiB (a valid policy padded with a
    comment) loads like any other."""
    stores = lending_copy(tmp_path)
    path = stores / "lending" / "padded.cedar"
    head = '@id("padded")\nforbid (principal, action, resource) when { false };\n// '
    path.write_text(head + "x" * (MAX_POLICY_FILE_BYTES - len(head) - 1) + "\n")
    assert path.stat().st_size == MAX_POLICY_FILE_BYTES
    validated = run([sys.executable, "-m", "verdict", "validate", "--stores", str(stores)])
    assert validated.returncode == 0, validated.stderr[-2000:]


def test_entities_load_refuses_an_oversized_file_and_leaves_redis_as_it_was(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """`verdict entities load` exits 2 naming the file and the bound; the store's version in
    Redis is the one the previous load left."""
    stores = lending_copy(tmp_path)
    command = [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores)]
    command += ["--redis-url", redis.url]
    assert run(command).returncode == 0
    version = redis.cli("GET", StoreKeys.of("lending").version).strip()
    sparse(stores / "lending" / "entities.json", MAX_ENTITIES_FILE_BYTES + 1)
    refused = run(command)
    assert refused.returncode == 2, refused.stderr
    assert "lending/entities.json" in refused.stderr
    assert "larger than the limit of 512 MiB" in refused.stderr
    assert redis.cli("GET", StoreKeys.of("lending").version).strip() == version


def test_the_bounds_hold_the_benchmarks_largest_stores_twice_over() -> None:
    """The 100,000-policy generated store (both variants) and 300,000 lending entities, the
    largest the benchmarks serve and load, each fit twice within their bound."""
    for variant in ("scope", "condition"):
        text = policy_text(Shape(100_000), variant)
        assert 2 * len(text.encode()) <= MAX_POLICY_FILE_BYTES, variant
    entities = json.dumps(lending_entities(300_000)).encode()
    assert 2 * len(entities) <= MAX_ENTITIES_FILE_BYTES

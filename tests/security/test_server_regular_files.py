"""A FIFO (or other non-regular file) in a policy store stops serve and validate at once (14.9)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POLICIES
from tests.processes import free_port
from tests.security.serve_process import serve_command

# Each file a store reads at start; a FIFO under any of these names must be refused, not read.
STORE_FILES = ["x.cedar", "loans/y.cedar", "schema.cedarschema", "store.toml", "entities.json"]


@pytest.fixture(params=STORE_FILES)
def fifo_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the lending store with a FIFO at one of its file names; (stores dir, name)."""
    root = tmp_path / "stores" / "lending"
    shutil.copytree(POLICIES / "lending", root)
    name: str = request.param
    (root / name).unlink(missing_ok=True)
    os.mkfifo(root / name)
    return root.parent, name


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; a hang shows up as TimeoutExpired after 15 s."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)


def test_validate_refuses_a_fifo(fifo_store: tuple[Path, str]) -> None:
    """`verdict validate` exits 1 naming the FIFO, instead of hanging or skipping it."""
    stores, name = fifo_store
    result = run([sys.executable, "-m", "verdict", "validate", "--stores", str(stores)])
    assert result.returncode == 1, result.stdout
    assert f"lending/{name}:0: not a regular file" in result.stderr


def test_serve_refuses_a_fifo(fifo_store: tuple[Path, str]) -> None:
    """`verdict serve` exits 2 at start naming the FIFO, not hanging or serving without it."""
    stores, name = fifo_store
    result = run(serve_command(stores, free_port()))
    assert result.returncode == 2
    assert f"lending/{name}:0: not a regular file" in result.stderr


def test_serve_refuses_a_folder_named_like_a_policy_file(tmp_path: Path) -> None:
    """A folder named ``*.cedar`` is a load diagnostic, not a crash with a traceback."""
    root = tmp_path / "lending"
    shutil.copytree(POLICIES / "lending", root)
    (root / "odd.cedar").mkdir()
    result = run(serve_command(tmp_path, free_port()))
    assert result.returncode == 2
    assert "lending/odd.cedar:0: not a regular file" in result.stderr

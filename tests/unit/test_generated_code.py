"""The committed generated protobuf code must match the .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path: Path) -> None:
    """Regenerating from proto/ reproduces src/verdict/_gen byte for byte."""
    out = tmp_path / "_gen"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    committed = ROOT / "src" / "verdict" / "_gen"
    fresh = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    current = {
        p.relative_to(committed): p.read_bytes()
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(fresh) == sorted(current), "run `make proto`"
    stale = [str(name) for name in fresh if fresh[name] != current[name]]
    assert not stale, f"stale generated files {stale}: run `make proto`"

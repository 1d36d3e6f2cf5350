"""Write small policy stores into a temporary folder for tests."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SAMPLE_POLICIES = Path(__file__).resolve().parent.parent / "policies"


def write_store(stores_dir: Path, name: str, files: dict[str, str | list[Any]]) -> Path:
    """Create ``stores_dir/name`` with ``files`` (lists are written as JSON)."""
    root = stores_dir / name
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return root


def lending_copy(tmp_path: Path) -> Path:
    """A stores folder under ``tmp_path`` holding a copy of the sample lending store (for tests
    that edit its files)."""
    folder = tmp_path / "stores"
    shutil.copytree(
        Path(__file__).resolve().parent.parent / "policies" / "lending", folder / "lending"
    )
    return folder


def sparse(path: Path, size: int) -> None:
    """Replace ``path`` (atomically) with a sparse file of ``size`` bytes: no disk used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.parent / f".{path.name}.sparse"
    with staged.open("wb") as handle:
        handle.truncate(size)
    os.replace(staged, path)


def entity(
    type_: str,
    id_: str,
    attrs: dict[str, Any] | None = None,
    parents: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """A Cedar JSON entity."""
    return {
        "uid": {"type": type_, "id": id_},
        "attrs": attrs or {},
        "parents": [{"type": t, "id": i} for t, i in parents],
    }

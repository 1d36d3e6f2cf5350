"""What a policy store folder looks like, told without loading it (no Cedar, no parse)."""

from __future__ import annotations

import os
from pathlib import Path

SCHEMA_TEXT = "schema.cedarschema"
SCHEMA_JSON = "schema.cedarschema.json"


def is_one_store(folder: Path) -> bool:
    """Whether ``folder`` is itself a policy store (``*.cedar`` files or a schema right in
    it) rather than a folder of stores: the loader would take its subfolders (``loans/``,
    ``tests/``) for stores and leave its policies out."""
    return _holds_store_files(folder, cedar=True)


def _holds_store_files(folder: Path, *, cedar: bool) -> bool:
    """Whether ``folder`` directly holds a schema file (or, with ``cedar``, a *.cedar file)."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                wanted = name in (SCHEMA_TEXT, SCHEMA_JSON) or (cedar and name.endswith(".cedar"))
                if wanted and entry.is_file():
                    return True
    except OSError:  # missing or unreadable: the loader says which
        return False
    return False


def _subfolders(folder: Path) -> list[Path]:
    """The folders in ``folder`` the loader would take for stores: by name, not hidden."""
    try:
        with os.scandir(folder) as entries:
            found = [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return []
    return sorted(found, key=lambda p: p.name)


def nested_store(folder: Path) -> tuple[Path, Path] | None:
    """The first subfolder of ``folder`` (by name) that is a folder of stores rather than a
    store, with the first store in it: it holds no schema and no ``*.cedar`` file itself, and
    a child folder of it holds a schema file. The loader reads a store's ``*.cedar`` files in
    every folder below it, so it would take that subfolder for one store, with all their
    policies and none of their schemas.

    Only a schema marks the nested store: a child folder of only ``*.cedar`` files is a
    legitimate part of a store (``lending/loans/``), even of one whose own policies all lie
    in such folders."""
    for candidate in _subfolders(folder):
        if _holds_store_files(candidate, cedar=True):
            continue
        for child in _subfolders(candidate):
            if _holds_store_files(child, cedar=False):
                return candidate, child
    return None

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
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if (name.endswith(".cedar") or name in (SCHEMA_TEXT, SCHEMA_JSON)) and (
                    entry.is_file()
                ):
                    return True
    except OSError:  # missing or unreadable: the loader says which
        return False
    return False

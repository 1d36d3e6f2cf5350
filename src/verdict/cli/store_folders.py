"""The check every command taking --stores makes first: the folder is not a single store."""

from __future__ import annotations

import argparse
from pathlib import Path

from verdict.cli.common import fail

# Arguments that name a folder of policy stores, and the flag each is given with.
STORES_ARGUMENTS = {"stores": "--stores", "against": "--against"}


def one_store_message(name: str, folder: Path, *, variable: bool = False) -> str:
    """What is said when ``folder``, given as ``name`` (a flag, or a variable when
    ``variable``), is one store: the folder that holds it is what was meant."""
    use = f"{name}={folder.parent}" if variable else f"{name} {folder.parent}"
    return f"{name}={folder}: is one policy store, not a folder of stores; use {use}"


def check_store_folders(args: argparse.Namespace) -> None:
    """Stop when a --stores (or diff's --against) folder is itself a store: `validate` passed
    it with its subfolders for stores, and `check` said the store id names no store."""
    for dest, flag in STORES_ARGUMENTS.items():
        folder = getattr(args, dest, None)
        if isinstance(folder, Path):
            from verdict.policy.layout import is_one_store

            if is_one_store(folder):
                fail(one_store_message(flag, folder))

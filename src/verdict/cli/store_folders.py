"""The check every command taking --stores makes first: the folder is one of stores."""

from __future__ import annotations

import argparse
from pathlib import Path

from verdict.cli.common import EmptyPath, fail

# Arguments that name a folder of policy stores, and the flag each is given with.
STORES_ARGUMENTS = {"stores": "--stores", "against": "--against"}


def one_store_message(name: str, folder: Path, *, variable: bool = False) -> str:
    """What is said when ``folder``, given as ``name`` (a flag, or a variable when
    ``variable``), is one store: the folder that holds it is what was meant."""
    use = f"{name}={folder.parent}" if variable else f"{name} {folder.parent}"
    return f"{name}={folder}: is one policy store, not a folder of stores; use {use}"


def nested_stores_message(name: str, folder: Path, *, variable: bool = False) -> str | None:
    """What is said when a subfolder of ``folder`` (given as ``name``) holds stores of its
    own: the loader would take it for one store, its stores' schemas unread; None if none
    does."""
    from verdict.policy.layout import nested_store

    found = nested_store(folder)
    if found is None:
        return None
    outer, inner = found
    meant = folder / outer.name
    use = f"{name}={meant}" if variable else f"{name} {meant}"
    return (
        f"{name}={folder}: its folder {outer.name} holds policy stores of its own "
        f"({outer.name}/{inner.name}); use {use}"
    )


def stores_folder_problem(name: str, folder: Path, *, variable: bool = False) -> str | None:
    """What is wrong with ``folder`` as a folder of stores (given as ``name``): it is one
    store, or one of its subfolders holds stores of its own; None if neither."""
    from verdict.policy.layout import is_one_store

    if is_one_store(folder):
        return one_store_message(name, folder, variable=variable)
    return nested_stores_message(name, folder, variable=variable)


def check_store_folders(args: argparse.Namespace) -> None:
    """Stop when a --stores (or diff's --against) folder is empty, itself a store, or holds a
    folder of stores: `validate` passed the first two with the working folder's or the
    store's subfolders for stores and the last with one store of all their policies, and
    `check` said the store id names no store."""
    for dest, flag in STORES_ARGUMENTS.items():
        folder = getattr(args, dest, None)
        if isinstance(folder, EmptyPath):  # Path("") is the working folder
            fail(f"{flag}: must name a folder of policy stores")
        if isinstance(folder, Path):
            problem = stores_folder_problem(flag, folder)
            if problem is not None:
                fail(problem)

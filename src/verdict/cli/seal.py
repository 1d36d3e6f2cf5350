"""``verdict seal``: write each store's seal, the digests of the files a deploy just wrote."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from verdict.cli.commands import summary
from verdict.cli.common import EXIT_FAILED, EXIT_OK, choose_store, unusable


def _seal(args: argparse.Namespace) -> int:
    from verdict.app import entity_file
    from verdict.errors import PolicyLoadError
    from verdict.policy.loader import sealable_digests, store_roots
    from verdict.policy.seal import write_seal
    from verdict.store.memory import MemoryEntityStore

    try:
        roots = {root.name: root for root in store_roots(args.stores)}
    except PolicyLoadError as exc:
        unusable(exc.diagnostics, "no store sealed")
    if not roots:  # a deploy step that sealed nothing must not pass as one that sealed all
        unusable([f"{args.stores}:0: no policy stores (subfolders) found"], "no store sealed")
    choose_store(roots, args.store)
    chosen = [roots[args.store]] if args.store else list(roots.values())
    found: dict[Path, dict[str, str]] = {}
    problems = []
    for root in chosen:
        # A store is sealed only as it loads: what is sealed is what was checked.
        try:
            found[root] = sealable_digests(
                root, lambda store: MemoryEntityStore.read_file(entity_file(store))
            )
        except PolicyLoadError as exc:
            problems.extend(exc.diagnostics)
    if problems:  # none sealed: a deploy seals all of its stores or none
        unusable(problems, f"{len(problems)} problem(s) found; no store sealed", EXIT_FAILED)
    for root, digests in found.items():
        write_seal(root, digests)
        print(f"{root.name}: sealed {len(digests)} file(s) in {root.name}/store.seal")
    return EXIT_OK


def add_seal_command(commands: Any) -> None:
    """Register ``verdict seal``."""
    seal = commands.add_parser(
        "seal",
        help=summary("seal"),
        description="Check each store as `verdict validate` does, then write its store.seal: "
        "the digest of every file of the store. A sealed store is served only while its files "
        "match the seal, so a deploy that writes files in place (or in several steps) is "
        "never served half-done: run this once every file is written. Exit 0 sealed, 1 a "
        "store does not load (nothing sealed), 2 usage or no stores found.",
    )
    seal.add_argument(
        "--stores", type=Path, required=True, help="folder of policy stores (required)"
    )
    seal.add_argument("--store", help="seal this store only (default: every store)")
    seal.set_defaults(func=_seal)

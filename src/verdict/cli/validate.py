"""``verdict validate``: check every policy store (syntax, schema, ids, links, entities)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from verdict.cli.commands import summary
from verdict.cli.common import EXIT_FAILED, EXIT_OK, fail, unusable


def _validate(args: argparse.Namespace) -> int:
    from verdict.app import entity_files
    from verdict.authoring.warnings import store_warnings
    from verdict.errors import PolicyLoadError
    from verdict.policy.loader import load_policy_stores
    from verdict.store.memory import MemoryEntityStore

    try:
        snapshot = load_policy_stores(args.stores, args.default_store)
        # Entities are validated too: a broken entities.json stops `make run` just the same.
        MemoryEntityStore.from_files(entity_files(snapshot))
    except PolicyLoadError as exc:
        unusable(exc.diagnostics, f"{len(exc.diagnostics)} problem(s) found", EXIT_FAILED)
    for store in snapshot.stores.values():
        templates = sum(1 for p in store.policies.values() if p.is_template)
        print(
            f"{store.store_id}: {len(store.policies) - templates} policies "
            f"(templates {templates}), "
            f"schema {'yes' if store.schema is not None else 'no'}, "
            f"validation {store.settings.validation.value}, version {store.version}"
        )
    warnings = [w for store in snapshot.stores.values() for w in store_warnings(store)]
    for warning in warnings:
        print(f"{warning.file}:{warning.line}: warning: {warning.message}", file=sys.stderr)
    if warnings and args.strict:
        fail(f"{len(warnings)} warning(s) with --strict", EXIT_FAILED)
    return EXIT_OK


def add_validate_command(commands: Any) -> None:
    """Register ``verdict validate``."""
    validate = commands.add_parser(
        "validate",
        help=summary("validate"),
        description="Check syntax, schema, ids, links and entities of every store; print "
        "file:line problems, then warnings (policies that can never apply, templates without "
        "links). Exit 0 valid, 1 invalid (or warnings with --strict).",
    )
    validate.add_argument("--stores", type=Path, required=True, help="folder of policy stores")
    validate.add_argument("--default-store", help="store that must exist as the default")
    validate.add_argument(
        "--strict", action="store_true", help="treat warnings as problems (exit 1)"
    )
    validate.set_defaults(func=_validate)

"""``verdict entities load|export``: between entities.json files and Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from verdict.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    check_redis_url,
    choose_store,
    fail,
    load_settings,
    redact_url,
    refuse_folder,
    write_output,
)
from verdict.config import Settings
from verdict.entities_load import load_entities_file
from verdict.errors import (
    PolicyLoadError,
    StoreConnectError,
    StoreUnavailableError,
    VerdictError,
)
from verdict.heap import exit_if_kept
from verdict.policy.loader import files_as_loaded, load_policy_stores
from verdict.policy.snapshot import StoreSnapshot
from verdict.progress import reporter
from verdict.store.entity_cache import EntityCache
from verdict.store.parent_graph import HierarchyLimits
from verdict.store.redis_connect import key_layout, make_client
from verdict.store.redis_store import RedisEntityStore

# Settings field -> the flag of these commands that sets it.
EXPORT_EXAMPLE = "entities.json"
FLAGS = {
    "redis_url": "--redis-url",
    "redis_cluster": "--redis-cluster",
    "redis_timeout_seconds": "--timeout",
    "redis_namespace": "--redis-namespace",
}


def _settings(args: argparse.Namespace) -> Settings:
    check_redis_url("--redis-url", args.redis_url)
    return load_settings(
        {
            "redis_url": args.redis_url,
            "redis_cluster": args.redis_cluster or None,  # else VERDICT_REDIS_CLUSTER, as serve
            "redis_timeout_seconds": args.timeout,
            "redis_namespace": args.redis_namespace,
        },
        FLAGS,
    )


def _store(args: argparse.Namespace, settings: Settings) -> RedisEntityStore:
    return RedisEntityStore(
        make_client(settings),
        EntityCache(0, 0),
        layout=key_layout(settings),
        op_timeout=args.timeout,
        retries=settings.redis_retries,
    )


def _still_as_loaded(store: StoreSnapshot) -> None:
    """Stop unless the store's files are as its load found them: an entities.json added
    during the load (unread, unsealed) was otherwise passed over, and the store marked
    loaded with whatever Redis held (attack round 21)."""
    if not files_as_loaded(store):
        fail(f"{store.store_id}: files changed while being read; nothing written: run again")


async def load(args: argparse.Namespace) -> int:
    """Each store's entities.json into Redis (or the store marked loaded without one)."""
    settings = _settings(args)
    snapshot = load_policy_stores(args.stores, require_seal=settings.require_seal)
    choose_store(snapshot.stores, args.store)
    chosen = [args.store] if args.store else sorted(snapshot.stores)
    store = _store(args, settings)
    try:
        await store.prepare()
        for store_id in chosen:
            policy_store = snapshot.resolve(store_id)
            _still_as_loaded(policy_store)
            if policy_store.entities_file is None:
                # Its entities (if any) are written through the API: keep them, but say that
                # what Redis holds is complete, so decisions may use it.
                marked = await store.mark_loaded(store_id)
                state = "marked loaded" if marked else "already loaded"
                print(f"{store_id}: no entities.json, entities left as they are ({state})")
                continue
            with reporter(interval=args.progress_seconds) as progress:
                report = await load_entities_file(
                    store,
                    store_id,
                    policy_store.entities_file,
                    policy_store.schema,
                    progress,
                    shown=f"{store_id}/entities.json",
                    chunk=args.chunk,
                    hierarchy=HierarchyLimits.of(settings),
                    sealed=policy_store.sealed_entities,
                    shape=policy_store.schema_shape,
                    connect=lambda: _store(args, settings),
                    keep=True,  # freed by the process's end: see run()
                )
            print(report.summary(store_id))
    finally:
        await store.close()
    return EXIT_OK


async def export(args: argparse.Namespace) -> int:
    """One store's entities from Redis as a Cedar JSON array."""
    if args.out:  # before reading Redis: the export may be large
        refuse_folder("--out", args.out, EXPORT_EXAMPLE)
    store = _store(args, _settings(args))
    try:
        entities = await store.export(args.store)
    finally:
        await store.close()
    text = json.dumps(entities, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        write_output("--out", args.out, text, EXPORT_EXAMPLE)
        print(f"{args.store}: {len(entities)} entities written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run ``entities load`` or ``export``; Redis and load errors become one line."""
    action = load if args.entities_command == "load" else export
    try:
        code: int = asyncio.run(action(args))
    except StoreConnectError as exc:  # refused, authentication, host, socket, database
        fail(f"cannot connect to Redis at {redact_url(args.redis_url)}: {exc.reason}")
    except StoreUnavailableError as exc:
        fail(f"Redis at {redact_url(args.redis_url)}: {exc}")
    except (PolicyLoadError, VerdictError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # A load ends here, its parsed entities unfreed: its forked child has ended, its threads
    # are idle, its Redis connections closed.
    exit_if_kept(code)
    return code

"""``verdict entities load|export`` (files and Redis) and ``put|delete|get`` (a running server)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from verdict.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    add_commands,
    choose_store,
    fail,
    load_settings,
    redact_url,
)
from verdict.cli.entities_remote import add_remote_actions
from verdict.entities_load import load_entities_file
from verdict.errors import PolicyLoadError, StoreRefusedError, StoreUnavailableError, VerdictError
from verdict.policy.loader import load_policy_stores
from verdict.progress import reporter
from verdict.store.entity_cache import EntityCache
from verdict.store.redis_connect import key_layout, make_client
from verdict.store.redis_store import RedisEntityStore

# Settings field -> the flag of these commands that sets it.
FLAGS = {
    "redis_url": "--redis-url",
    "redis_cluster": "--redis-cluster",
    "redis_timeout_seconds": "--timeout",
    "redis_namespace": "--redis-namespace",
}


def _store(args: argparse.Namespace) -> RedisEntityStore:
    settings = load_settings(
        {
            "redis_url": args.redis_url,
            "redis_cluster": args.redis_cluster,
            "redis_timeout_seconds": args.timeout,
            "redis_namespace": args.redis_namespace,
        },
        FLAGS,
    )
    return RedisEntityStore(
        make_client(settings),
        EntityCache(0, 0),
        layout=key_layout(settings),
        op_timeout=args.timeout,
        retries=settings.redis_retries,
    )


async def _load(args: argparse.Namespace) -> int:
    snapshot = load_policy_stores(args.stores)
    choose_store(snapshot.stores, args.store)
    chosen = [args.store] if args.store else sorted(snapshot.stores)
    store = _store(args)
    try:
        await store.prepare()
        for store_id in chosen:
            policy_store = snapshot.resolve(store_id)
            if policy_store.entities_file is None:
                # Its entities (if any) are written through the API: keep them, but say that
                # what Redis holds is complete, so decisions may use it.
                marked = await store.mark_loaded(store_id)
                state = "marked loaded" if marked else "already loaded"
                print(f"{store_id}: no entities.json, entities left as they are ({state})")
                continue
            with reporter() as progress:
                report = await load_entities_file(
                    store,
                    store_id,
                    policy_store.entities_file,
                    policy_store.schema,
                    progress,
                    shown=f"{store_id}/entities.json",
                    chunk=args.chunk,
                )
            print(report.summary(store_id))
    finally:
        await store.close()
    return EXIT_OK


async def _export(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        entities = await store.export(args.store)
    finally:
        await store.close()
    text = json.dumps(entities, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"{args.store}: {len(entities)} entities written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = asyncio.run(args.entities_func(args))
    except StoreRefusedError:
        fail(f"cannot connect to Redis at {redact_url(args.redis_url)}: connection refused")
    except StoreUnavailableError as exc:
        fail(f"Redis at {redact_url(args.redis_url)}: {exc}")
    except (PolicyLoadError, VerdictError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


def add_entities_command(commands: Any) -> None:
    """Register ``verdict entities`` and its subcommands."""
    entities = commands.add_parser(
        "entities",
        help="load or export entities in Redis; put, delete or get them on a server",
        description="Move Cedar JSON entities between policy stores' entities.json files and "
        "Redis (load, export), or write and read them through a running server's EntityService "
        "(put, delete, get).",
    )
    actions = add_commands(entities, "entities_command", "ACTION")
    load = actions.add_parser(
        "load",
        help="load entities.json of every store (or one)",
        description="Validate each store's entities.json against its schema and make it the "
        "store's entities in Redis: staged in pipelined chunks, then switched to in one atomic "
        "step (entities not in the file are removed). A store without entities.json is only "
        "marked loaded.",
    )
    load.add_argument("--stores", type=Path, required=True, help="folder of policy stores")
    load.add_argument("--store", help="load only this store")
    load.add_argument("--chunk", type=int, default=1000, help="entities per atomic write")
    load.set_defaults(entities_func=_load)
    export = actions.add_parser(
        "export",
        help="write a store's entities as Cedar JSON",
        description="Read every entity of one store from Redis and "
        "write a Cedar JSON array (sorted by uid).",
    )
    export.add_argument("--store", required=True, help="policy store id")
    export.add_argument("--out", type=Path, help="file to write (default: stdout)")
    export.set_defaults(entities_func=_export)
    for sub in (load, export):
        sub.add_argument("--redis-url", required=True, help="redis://, rediss:// or unix://")
        sub.add_argument("--redis-cluster", action="store_true", help="URL names a cluster node")
        sub.add_argument("--timeout", type=float, default=5.0, help="seconds per Redis call")
        sub.add_argument(
            "--redis-namespace",
            default="verdict",
            help="key and channel prefix of the deployment (as VERDICT_REDIS_NAMESPACE)",
        )
    entities.set_defaults(func=_run)
    add_remote_actions(actions)

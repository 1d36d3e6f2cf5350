"""Bulk entity transfer: replace a store's entities, visible all at once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from verdict.store.base import EntityWriter, StoredEntity

DEFAULT_CHUNK = 1000
DEFAULT_PIPELINE = 8  # chunks per round trip
DEFAULT_IN_FLIGHT = 4  # round trips under way at once


@runtime_checkable
class StagingWriter(Protocol):
    """A writer that can stage a whole store's entities, then switch to them in one step."""

    async def stage(
        self, store_id: str, token: str, batches: Sequence[Sequence[StoredEntity]]
    ) -> None:
        """Add entities to the load ``token``, invisible to readers."""
        ...

    async def switch(self, store_id: str, token: str, count: int) -> int:
        """Replace the store's entities with the ``count`` staged ones; return the version."""
        ...

    async def discard(self, store_id: str, token: str) -> None:
        """Drop what the load ``token`` staged."""
        ...


async def load_entities(
    writer: EntityWriter,
    store_id: str,
    entities: Sequence[StoredEntity],
    chunk: int = DEFAULT_CHUNK,
    pipeline: int = DEFAULT_PIPELINE,
    in_flight: int = DEFAULT_IN_FLIGHT,
    *,
    on_written: Callable[[int], None] | None = None,
    before_switch: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Make ``entities`` the store's entities; return the store's version afterwards.

    A staging writer receives them in chunks, ``pipeline`` chunks per round trip, and switches
    in one atomic step: readers see the old entities or the new ones, never a mix, and
    entities absent from ``entities`` are gone. Other writers get one upsert per chunk.
    ``on_written`` hears how many entities each round trip wrote (for progress);
    ``before_switch`` runs once all are staged and may raise to abandon the load (a check
    still running beside the writes, such as the schema validation of the whole set).
    """
    if not isinstance(writer, StagingWriter):
        if before_switch is not None:  # upserts are visible at once: check first
            await before_switch()
        versions = []
        for part in _chunks(entities, chunk):
            versions.append(await writer.put(store_id, part))
            if on_written is not None:
                on_written(len(part))
        return max(versions, default=0)
    token = new_token()
    try:
        await stage_entities(
            writer, store_id, token, entities, chunk, pipeline, in_flight, on_written
        )
        if before_switch is not None:
            await before_switch()
        return await writer.switch(store_id, token, len(entities))
    except BaseException:
        await discard(writer, store_id, token)
        raise


def new_token() -> str:
    """A fresh bulk load's name."""
    return secrets.token_hex(8)


async def stage_entities(
    writer: StagingWriter,
    store_id: str,
    token: str,
    entities: Sequence[StoredEntity],
    chunk: int = DEFAULT_CHUNK,
    pipeline: int = DEFAULT_PIPELINE,
    in_flight: int = DEFAULT_IN_FLIGHT,
    on_written: Callable[[int], None] | None = None,
) -> None:
    """Add ``entities`` to the load ``token``: ``pipeline`` chunks per round trip, up to
    ``in_flight`` round trips at once. Several stagings (processes) may fill one token."""
    chunks = _chunks(entities, chunk)
    groups = [chunks[i : i + pipeline] for i in range(0, len(chunks), pipeline)]
    gate = asyncio.Semaphore(in_flight)

    async def send(group: Sequence[Sequence[StoredEntity]]) -> None:
        async with gate:
            await writer.stage(store_id, token, group)
        if on_written is not None:
            on_written(sum(len(part) for part in group))

    tasks = [asyncio.ensure_future(send(group)) for group in groups]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def discard(writer: StagingWriter, store_id: str, token: str) -> None:
    """Drop what the load ``token`` staged; best effort: staging keys expire anyway."""
    try:
        await writer.discard(store_id, token)
    except Exception:  # the load's own error is the one to report
        return


def _chunks(entities: Sequence[StoredEntity], size: int) -> list[Sequence[StoredEntity]]:
    return [entities[i : i + size] for i in range(0, len(entities), size)]

"""Load one store's entities.json into Redis: parse, validate and write, in overlapping phases.

Cedar's entity parser is the slow part (tens of µs per entity). It runs in a thread, on the
file's text, with the GIL released (``release_gil``), while this thread parses the same text
strictly and stages the entities in Redis: on two cores the two overlap fully. The staged load
becomes the store's data only once Cedar has accepted the whole set, so a file Cedar rejects
changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from verdict import cedar
from verdict.cedar import SchemaHandle
from verdict.cedar_json import loads_strict
from verdict.errors import Diagnostic, PolicyLoadError, RequestError
from verdict.files import FileReadError, read_text
from verdict.heap import collector_paused
from verdict.policy.file_limits import MAX_ENTITIES_FILE_BYTES
from verdict.progress import Reporter
from verdict.store.bulk import load_entities
from verdict.store.entity_file import refusal_reason, shaped_entities
from verdict.store.json_lines import error_line
from verdict.store.redis_store import RedisEntityStore


@dataclass(frozen=True)
class LoadReport:
    """What a load did: entities written, the store's version after it, and the time of the
    whole load (read to switch) and of its Redis writes."""

    count: int
    version: int
    seconds: float
    write_seconds: float

    def summary(self, store_id: str) -> str:
        overall = self.count / max(self.seconds, 1e-9)
        written = self.count / max(self.write_seconds, 1e-9)
        return (
            f"{store_id}: {self.count:,} entities in {self.seconds:.2f}s ({overall:,.0f}/s; "
            f"Redis writes {self.write_seconds:.2f}s, {written:,.0f}/s), version {self.version}"
        )


async def load_entities_file(
    store: RedisEntityStore,
    store_id: str,
    path: Path,
    schema: SchemaHandle | None,
    progress: Reporter,
    *,
    shown: str,
    chunk: int,
) -> LoadReport:
    """Make ``path`` the entities of ``store_id`` in Redis; PolicyLoadError (naming ``shown``
    and, where known, the line) when the file cannot be read, parsed or validated."""
    started = time.perf_counter()
    text = ""
    validation: asyncio.Future[bool] | None = None
    try:
        with progress.phase("read"):
            text = read_text(path, MAX_ENTITIES_FILE_BYTES)
        validation = asyncio.ensure_future(_validate(text, schema))
        await asyncio.sleep(0)  # hand the text to the other process before parsing it here
        with progress.phase("parse"), collector_paused():
            document = loads_strict(text, "entities", max_depth=64)
            entities = list(shaped_entities(document, keep_text=True).values())

        async def conforms() -> None:
            with progress.phase("validate"):
                assert validation is not None
                if not await validation:  # say why: Cedar's detailed reason, second pass
                    raise RequestError("entities", refusal_reason(document, schema))

        write_started = time.perf_counter()
        with progress.phase("write", total=len(entities)) as writing:
            version = await load_entities(
                store,
                store_id,
                entities,
                chunk=chunk,
                on_written=writing.advance,
                before_switch=conforms,
            )
        write_seconds = time.perf_counter() - write_started
    except FileReadError as exc:
        raise PolicyLoadError([Diagnostic(shown, 0, f"invalid entities: {exc}")]) from None
    except RequestError as exc:
        line = error_line(text, exc)
        raise PolicyLoadError([Diagnostic(shown, line, f"invalid entities: {exc}")]) from None
    finally:
        if validation is not None and not validation.done():
            validation.cancel()  # a failed parse or write: the other process's answer is moot
            await asyncio.wait([validation])
    seconds = time.perf_counter() - started
    return LoadReport(len(entities), version, seconds, write_seconds)


async def _validate(text: str, schema: SchemaHandle | None) -> bool:
    """Whether Cedar accepts the whole entities document, checked in a thread beside the
    parse (a second process cost its start and a copy of the text, for the same overlap)."""
    return await asyncio.to_thread(cedar.entities_conform, text, schema, release_gil=True)

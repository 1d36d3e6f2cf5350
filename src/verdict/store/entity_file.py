"""Read Cedar JSON entities (a file or an already parsed document), checked for shape and schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verdict import cedar
from verdict.cedar import SchemaHandle
from verdict.cedar_json import check_entity, loads_strict
from verdict.errors import Diagnostic, PolicyLoadError, RequestError
from verdict.files import FileReadError, read_store_text
from verdict.heap import collector_paused
from verdict.model import EntityUid
from verdict.policy.file_limits import MAX_ENTITIES_FILE_BYTES
from verdict.store.base import StoredEntity
from verdict.store.json_lines import error_line
from verdict.store.weight import entity_text


def build_entities(
    document: Any, schema: SchemaHandle | None, where: str = "entities"
) -> dict[EntityUid, StoredEntity]:
    """Entities of a parsed Cedar JSON array keyed by uid; RequestError names the problem.

    The schema check runs once over the whole set (it also catches parent cycles); Cedar's
    detailed reason is included, since this serves local files, never a network caller.
    """
    entities = shaped_entities(document, where)
    problem = cedar.entity_problem(document, schema)
    if problem is not None:
        raise RequestError(where, problem.text)
    return entities


def shaped_entities(
    document: Any, where: str = "entities", *, keep_text: bool = False
) -> dict[EntityUid, StoredEntity]:
    """Entities of a parsed Cedar JSON array keyed by uid, each checked for shape (not yet
    against a schema); ``keep_text`` keeps each one's serialisation for a bulk write."""
    if not isinstance(document, list):
        raise RequestError(where, "must be a JSON array of Cedar entities")
    entities: dict[EntityUid, StoredEntity] = {}
    for index, item in enumerate(document):
        uid, references = check_entity(item, f"{where}[{index}]")
        if uid in entities:
            raise RequestError(f"{where}[{index}]", f"duplicate entity {uid}")
        text = entity_text(item) if keep_text else None
        entities[uid] = StoredEntity(uid, item, references, text=text)
    return entities


def refusal_reason(document: Any, schema: SchemaHandle | None) -> str:
    """Why Cedar refused a whole entities document (``cedar.entities_conform`` said no): its
    detailed reason, asked for only then, since the evaluation that gives it holds the GIL."""
    problem = cedar.entity_problem(document, schema)
    return problem.text if problem is not None else "entities do not parse"


def _refusal(name: str, text: str, document: Any, schema: SchemaHandle | None) -> Diagnostic:
    """Why Cedar refused a store's entities, at the entity's line, without the value at fault:
    this goes to the server's log and to ReloadPolicies' answer, where entity attributes
    (loan data) must not (attack round 10)."""
    problem = cedar.entity_problem(document, schema)
    if problem is None:
        return Diagnostic(name, 1, "invalid entities: entities do not parse")
    line = error_line(text, RequestError("entities", problem.text))
    return Diagnostic(name, line, f"invalid entities: entities: {problem.data_free()}")


def read_entities_file(
    path: Path, schema: SchemaHandle | None, shown: str | None = None
) -> dict[EntityUid, StoredEntity]:
    """Entities of ``path`` keyed by uid; PolicyLoadError names the file on any problem."""
    name = shown or str(path)
    text = ""
    try:
        text = read_store_text(path, MAX_ENTITIES_FILE_BYTES)
        # A server reloads on a thread; the collector's full scans of a growing heap held
        # the GIL (60,000 entities: the longest loop gap 210 -> 130 ms, the read 3.5 -> 2.8 s).
        with collector_paused(freeze=False):
            document = loads_strict(text, "entities", max_depth=64)
            entities = shaped_entities(document)
        # Cedar's check of the whole file with the GIL released: a reload runs on a thread of
        # its own, and a check holding the GIL (the evaluation that says why) stalled every
        # decision for as long as it ran (~1.8 s for 60,000 entities, attack round 8). The
        # detailed reason is asked for only when the file is refused.
        if not cedar.entities_conform(text, schema, release_gil=True):
            raise PolicyLoadError([_refusal(name, text, document, schema)])
        return entities
    except FileReadError as exc:
        raise PolicyLoadError([Diagnostic(name, 0, f"invalid entities: {exc}")]) from None
    except RequestError as exc:
        line = error_line(text, exc)
        raise PolicyLoadError([Diagnostic(name, line, f"invalid entities: {exc}")]) from None

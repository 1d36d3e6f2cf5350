"""Read a Cedar JSON entities file, checked for shape and against the store's schema."""

from __future__ import annotations

from pathlib import Path

from verdict import cedar
from verdict.cedar import CedarError, SchemaHandle
from verdict.cedar_json import check_entity_shape, entity_references, loads_strict
from verdict.errors import Diagnostic, PolicyLoadError, RequestError
from verdict.model import EntityUid
from verdict.store.base import StoredEntity


def read_entities_file(
    path: Path, schema: SchemaHandle | None, shown: str | None = None
) -> dict[EntityUid, StoredEntity]:
    """Entities of ``path`` keyed by uid; PolicyLoadError names the file on any problem."""
    name = shown or str(path)
    try:
        document = loads_strict(path.read_text(encoding="utf-8"), "entities", max_depth=64)
        if not isinstance(document, list):
            raise RequestError("entities", "must be a JSON array of Cedar entities")
        entities: dict[EntityUid, StoredEntity] = {}
        for index, item in enumerate(document):
            uid = check_entity_shape(item, f"[{index}]")
            if uid in entities:
                raise RequestError(f"[{index}]", f"duplicate entity {uid}")
            entities[uid] = StoredEntity(uid, item, entity_references(item))
        cedar.check_entities(document, schema)
    except (RequestError, CedarError, UnicodeDecodeError, OSError) as exc:
        raise PolicyLoadError([Diagnostic(name, 1, f"invalid entities: {exc}")]) from None
    return entities

"""Read Cedar JSON entities (a file or an already parsed document), checked for shape and schema."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from verdict import cedar
from verdict.cedar import SchemaHandle
from verdict.cedar_json import check_entity_item, loads_strict
from verdict.errors import Diagnostic, EntitiesChangedError, PolicyLoadError, RequestError
from verdict.files import FileReadError, read_store_text
from verdict.heap import collector_paused
from verdict.model import EntityUid
from verdict.policy.file_limits import MAX_ENTITIES_FILE_BYTES
from verdict.policy.loader import version_of_digest
from verdict.policy.seal import entities_problem, text_digest
from verdict.policy.store_settings import is_action_type
from verdict.store.base import StoredEntity
from verdict.store.json_lines import entity_index, error_line
from verdict.store.parent_graph import HierarchyLimits, HierarchyProblem, check_graph
from verdict.store.weight import entity_text

DEFAULT_HIERARCHY = HierarchyLimits()
# Entity-ancestor pairs of a whole file read into one process (the memory store, the offline
# tools): Cedar holds each (~200 bytes). 20,000 users each under 200 groups (1.8 MB of file)
# cost it 650 MB, and the 512 MiB file bound allowed millions of them (attack round 19).
MAX_FILE_PAIRS = 2_000_000


def build_entities(
    document: Any,
    schema: SchemaHandle | None,
    where: str = "entities",
    hierarchy: HierarchyLimits = DEFAULT_HIERARCHY,
) -> dict[EntityUid, StoredEntity]:
    """Entities of a parsed Cedar JSON array keyed by uid; RequestError names the problem.

    The hierarchy is checked first (Cedar must never close a cycle or a long chain), then the
    schema, once over the whole set; Cedar's detailed reason is included, since this serves
    local files, never a network caller.
    """
    entities = shaped_entities(document, where, hierarchy=hierarchy)
    problem = cedar.entity_problem(document, schema)
    if problem is not None:
        raise RequestError(where, problem.text)
    return entities


def shaped_entities(
    document: Any,
    where: str = "entities",
    *,
    keep_text: bool = False,
    hierarchy: HierarchyLimits = DEFAULT_HIERARCHY,
) -> dict[EntityUid, StoredEntity]:
    """Entities of a parsed Cedar JSON array keyed by uid, each checked for shape and all of
    them for their hierarchy (not yet against a schema); ``keep_text`` keeps each one's
    serialisation for a bulk write."""
    if not isinstance(document, list):
        raise RequestError(where, "must be a JSON array of Cedar entities")
    shaper = EntityShaper(where, keep_text=keep_text)
    for item in document:
        shaper.add(item)
    shaper.check_hierarchy(hierarchy, max_pairs=MAX_FILE_PAIRS)
    return shaper.entities


class EntityShaper:
    """The items of an entities array, taken one at a time: each checked for shape (named by
    its position), their uids unique, and their parent graph, as a whole or in part, bounded
    (``check_hierarchy``) before any of it reaches Cedar."""

    def __init__(self, where: str, *, keep_text: bool = False) -> None:
        self.where = where
        self.keep_text = keep_text
        self.entities: dict[EntityUid, StoredEntity] = {}
        # Only entities with parents: a cycle or a chain runs through them alone.
        self._parents: dict[EntityUid, list[EntityUid]] = {}
        self._positions: dict[EntityUid, int] = {}

    def add(self, item: Any, text: str | None = None) -> StoredEntity:
        """Check one more item; the entity it holds. ``text``: its ``entity_text``, if made."""
        index = len(self.entities)
        uid, references, parents = check_entity_item(item, self.where, index)
        if uid in self.entities:
            raise RequestError(f"{self.where}[{index}]", f"duplicate entity {uid}")
        if self.keep_text:
            stored = entity_text(item) if text is None else text
            entity = StoredEntity.with_text(uid, item, references, stored)
        else:
            entity = StoredEntity(uid, item, references)
        self.entities[uid] = entity
        if parents:
            self._parents[uid] = parents
            self._positions[uid] = index
        return entity

    def include_graph(
        self,
        parents: Mapping[EntityUid, list[EntityUid]],
        positions: Mapping[EntityUid, int],
        offset: int,
    ) -> None:
        """Add the parent graph of entities another shaper took (items ``offset`` on), so
        ``check_hierarchy`` sees the whole file and names their positions in it."""
        self._parents.update(parents)
        self._positions.update((uid, offset + index) for uid, index in positions.items())

    @property
    def graph(self) -> tuple[dict[EntityUid, list[EntityUid]], dict[EntityUid, int]]:
        """(entity -> its parents, entity -> its position), for entities with parents."""
        return self._parents, self._positions

    def check_hierarchy(
        self,
        limits: HierarchyLimits,
        among: Collection[EntityUid] | None = None,
        max_pairs: int | None = None,
    ) -> None:
        """RequestError naming the first entity (of ``among``, default all so far, as a graph
        of their own) on a cycle, too deep or with too many ancestors, as writes are; with
        ``max_pairs``, also the one at which the entity-ancestor pairs Cedar would hold for
        the whole set pass it."""
        graph = self._parents
        if among is not None:
            graph = {uid: graph[uid] for uid in among if uid in graph}
        if max_pairs is not None:
            limits = HierarchyLimits(limits.max_depth, limits.max_ancestors, max_pairs)
        try:
            check_graph(graph, limits, count_pairs=max_pairs is not None)
        except HierarchyProblem as exc:
            field = f"{self.where}[{self._positions[exc.uid]}]"
            raise RequestError(field, f"{exc.uid}: {exc.problem}") from None


def is_action(entity: StoredEntity) -> bool:
    """Whether the entity is an action (``Action`` or ``<ns>::Action``)."""
    return is_action_type(entity.uid.type)


def cedar_refusal(document: Any, schema: SchemaHandle | None) -> RequestError:
    """Why Cedar refused a whole entities document (``cedar.entities_conform`` said no),
    asked for only then (the evaluation that gives it holds the GIL): the entity at fault by
    its position, the attribute and the explanation, never the value (loan data; attack
    round 24: ``entities load`` printed it to terminals and CI logs)."""
    problem = cedar.entity_problem(document, schema)
    if problem is None:
        return RequestError("entities", "entities do not parse")
    index = entity_index(problem.text, document)
    field = "entities" if index is None else f"entities[{index}]"
    return RequestError(field, problem.data_free())


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
    path: Path,
    schema: SchemaHandle | None,
    shown: str | None = None,
    hierarchy: HierarchyLimits = DEFAULT_HIERARCHY,
    *,
    sealed: str = "",
    version: str = "",
) -> dict[EntityUid, StoredEntity]:
    """Entities of ``path`` keyed by uid; PolicyLoadError names the file on any problem.
    ``sealed``: the digest the store's seal gives the file, which the bytes read must have;
    ``version``: the entities version the store's load found (``loader.file_version``),
    which they must have too (EntitiesChangedError)."""
    name = shown or str(path)
    text = ""
    try:
        text = read_store_text(path, MAX_ENTITIES_FILE_BYTES)
        digest = text_digest(text) if sealed or version else ""  # hashed once, for both
        unsealed = entities_problem(name, digest, sealed)
        if unsealed is not None:
            raise PolicyLoadError([unsealed])
        if version and version_of_digest(digest) != version:
            # Read apart from the policies (at a start, after them): an A -> B -> A edit
            # around the read served B under A's version, for good (attack round 22).
            changed = "changed while the store was being read (its policies, then this file)"
            raise EntitiesChangedError([Diagnostic(name, 0, changed)])
        # A server reloads on a thread; the collector's full scans of a growing heap held
        # the GIL (60,000 entities: the longest loop gap 210 -> 130 ms, the read 3.5 -> 2.8 s).
        with collector_paused(freeze=False):
            document = loads_strict(text, "entities", max_depth=64)
            # The hierarchy before Cedar: a 10,000-entity parent cycle in this file crashed
            # the server (SIGSEGV in cedarpy) at its start and at every worker's restart.
            entities = shaped_entities(document, hierarchy=hierarchy)
        # Cedar's check of the whole file with the GIL released: a reload runs on a thread of
        # its own, and a check holding the GIL (the evaluation that says why) stalled every
        # decision for as long as it ran (~1.8 s for 60,000 entities, attack round 8). The
        # detailed reason is asked for only when the file is refused. Cedar checks what was
        # parsed, in the one stored serialisation, as `entities load` has it check: the file's
        # own spelling could read otherwise to Cedar (a -0 is a float to it, 0 to Python).
        if not cedar.entities_conform(entity_text(document), schema, release_gil=True):
            raise PolicyLoadError([_refusal(name, text, document, schema)])
        return entities
    except FileReadError as exc:
        raise PolicyLoadError([Diagnostic(name, 0, f"invalid entities: {exc}")]) from None
    except RequestError as exc:
        line = error_line(text, exc)
        raise PolicyLoadError([Diagnostic(name, line, f"invalid entities: {exc}")]) from None

"""Load policy stores from disk into immutable snapshots, collecting file:line diagnostics."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from verdict import cedar
from verdict.cedar import CedarError, SchemaHandle
from verdict.errors import Diagnostic, PolicyLoadError
from verdict.files import FileReadError, is_regular, read_text
from verdict.model import EntityUid, JsonObject
from verdict.policy.index import (
    PolicyEntry,
    PolicyIndex,
    action_parents,
    link_entry,
    static_entry,
    template_part,
)
from verdict.policy.policy_sets import SelectionCacheLimits
from verdict.policy.references import literal_uids, read_uids
from verdict.policy.snapshot import (
    PolicyInfo,
    PolicySnapshot,
    StoreSnapshot,
    ValidationMode,
)
from verdict.policy.splitter import Statement, split_statements
from verdict.policy.store_settings import SETTINGS_FILE, read_store_settings

PARSE_CHUNK = 256  # statements per parse call
VALIDATE_CHUNK = 1_000  # policies per validation call: Cedar holds a parsed chunk at once
SCHEMA_TEXT = "schema.cedarschema"
SCHEMA_JSON = "schema.cedarschema.json"
ENTITIES_FILE = "entities.json"


@dataclass
class _Parsed:
    """One parsed policy: its info and source text, and what the index and slices need of its
    Cedar JSON form (a template keeps the form itself, for its links)."""

    info: PolicyInfo
    text: str
    entry: PolicyEntry | None
    template: JsonObject | None
    named: frozenset[EntityUid]
    read: frozenset[EntityUid]


def load_policy_stores(
    stores_dir: Path,
    default_store: str | None = None,
    cache: SelectionCacheLimits | None = None,
) -> PolicySnapshot:
    """Load every subfolder of ``stores_dir`` as a store; raise PolicyLoadError on any problem.

    The default store (used by requests naming none) is ``default_store``, which must exist,
    else the only store; with several stores and none chosen there is no default, and a
    request must name its store (a multi-tenant server needs no default tenant).
    """
    if not stores_dir.is_dir():
        raise PolicyLoadError([Diagnostic(str(stores_dir), 0, "policy stores folder not found")])
    roots = sorted(p for p in stores_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    diagnostics: list[Diagnostic] = []
    stores: dict[str, StoreSnapshot] = {}
    for root in roots:
        try:
            stores[root.name] = load_store(root, cache)
        except PolicyLoadError as exc:
            diagnostics.extend(exc.diagnostics)
    if not roots:
        diagnostics.append(Diagnostic(str(stores_dir), 0, "no policy stores (subfolders) found"))
    if diagnostics:
        raise PolicyLoadError(diagnostics)
    if default_store and default_store not in stores:
        message = f"default store {default_store!r} is not one of {sorted(stores)}"
        raise PolicyLoadError([Diagnostic(str(stores_dir), 0, message)])
    default = default_store or (roots[0].name if len(roots) == 1 else "")
    return PolicySnapshot(stores=stores, default_store=default)


def load_store(root: Path, cache: SelectionCacheLimits | None = None) -> StoreSnapshot:
    """Load one policy store folder; raise PolicyLoadError listing every problem found."""
    _check_regular_files(root)
    diagnostics: list[Diagnostic] = []
    schema = _load_schema(root, diagnostics)
    entities = root / ENTITIES_FILE
    settings = read_store_settings(
        root, schema is not None, diagnostics, has_entities=entities.is_file()
    )
    parsed = list(_parse_policy_files(root, diagnostics))
    _check_unique_ids(parsed, diagnostics)
    if schema is not None and settings.validation is ValidationMode.STRICT and not diagnostics:
        _validate(parsed, schema, diagnostics)
    if diagnostics:
        raise PolicyLoadError(diagnostics)
    try:
        index = build_index(parsed, schema, cache or SelectionCacheLimits())
    except (CedarError, ValueError) as exc:
        raise PolicyLoadError([Diagnostic(root.name, 0, f"policy set rejected: {exc}")]) from None
    return StoreSnapshot(
        store_id=root.name,
        root=root,
        policies={p.info.id: p.info for p in parsed},
        index=index,
        schema=schema,
        settings=settings,
        version=store_version(root),
        literal_uids=frozenset(u for p in parsed for u in p.named),
        read_uids=frozenset(u for p in parsed for u in p.read),
        entities_file=entities if entities.is_file() else None,
        rank={p.info.id: rank for rank, p in enumerate(parsed)},
    )


def build_index(
    parsed: Sequence[_Parsed],
    schema: SchemaHandle | None,
    cache: SelectionCacheLimits,
    links: Sequence[JsonObject] = (),
) -> PolicyIndex:
    """The store's policy index: its static policies and ``links`` of its templates."""
    templates = {p.info.id: p.template for p in parsed if p.template is not None}
    entries = [p.entry for p in parsed if p.entry is not None]
    entries += [link_entry(link, templates) for link in links]
    return PolicyIndex(
        entries,
        {pid: template_part(pid, est) for pid, est in templates.items()},
        action_parents(schema),
        cache,
    )


def _validate(parsed: list[_Parsed], schema: SchemaHandle, diagnostics: list[Diagnostic]) -> None:
    # Cedar validates each policy on its own; in chunks it never holds every policy parsed.
    for start in range(0, len(parsed), VALIDATE_CHUNK):
        chunk = parsed[start : start + VALIDATE_CHUNK]
        for issue in cedar.validate([p.text for p in chunk], schema):
            info = chunk[issue.position].info
            diagnostics.append(
                Diagnostic(
                    info.file,
                    info.line,
                    f"policy {info.id!r} fails schema validation: {issue.message}",
                )
            )


def _check_regular_files(root: Path) -> None:
    """A FIFO, device or folder under a store's file names is an error, never silently skipped."""
    names = (SCHEMA_TEXT, SCHEMA_JSON, SETTINGS_FILE, ENTITIES_FILE)
    odd = [root / name for name in names if (root / name).exists() and not is_regular(root / name)]
    if odd:
        raise PolicyLoadError(
            [Diagnostic(f"{root.name}/{path.name}", 0, "not a regular file") for path in odd]
        )


def _load_schema(root: Path, diagnostics: list[Diagnostic]) -> SchemaHandle | None:
    text_path, json_path = root / SCHEMA_TEXT, root / SCHEMA_JSON
    if text_path.is_file() and json_path.is_file():
        diagnostics.append(
            Diagnostic(
                f"{root.name}/{SCHEMA_JSON}",
                1,
                f"both {SCHEMA_TEXT} and {SCHEMA_JSON} exist; keep one",
            )
        )
        return None
    path = text_path if text_path.is_file() else json_path if json_path.is_file() else None
    if path is None:
        return None
    try:
        return cedar.parse_schema(read_text(path), is_json=path == json_path)
    except FileReadError as exc:
        diagnostics.append(Diagnostic(f"{root.name}/{path.name}", 0, str(exc)))
        return None
    except CedarError as exc:
        diagnostics.append(Diagnostic(f"{root.name}/{path.name}", 1, f"invalid schema: {exc}"))
        return None


def policy_files(root: Path) -> list[Path]:
    """Every ``*.cedar`` file below a store, in sorted relative-path order."""
    return sorted(root.rglob("*.cedar"), key=lambda p: p.relative_to(root).as_posix())


def _parse_policy_files(root: Path, diagnostics: list[Diagnostic]) -> Iterator[_Parsed]:
    for path in policy_files(root):
        relative = path.relative_to(root).as_posix()
        shown = f"{root.name}/{relative}"
        try:
            source = read_text(path)
        except FileReadError as exc:
            diagnostics.append(Diagnostic(shown, 0, str(exc)))
            continue
        statements = split_statements(source)
        for position, (statement, parsed) in enumerate(
            zip(statements, _parse_all(statements, shown, diagnostics), strict=True)
        ):
            if parsed is None:
                continue
            est, is_template = parsed
            annotations = est.get("annotations", {})
            policy_id = annotations.get("id") or f"{relative.removesuffix('.cedar')}#{position}"
            info = PolicyInfo(
                id=policy_id,
                file=shown,
                line=statement.line,
                effect=str(est.get("effect", "")),
                is_template=is_template,
                description=annotations.get("description", ""),
            )
            yield _Parsed(
                info,
                statement.text,
                None if is_template else static_entry(policy_id, est),
                est if is_template else None,
                frozenset(literal_uids(est)),
                read_uids(est),
            )


def _parse_all(
    statements: Sequence[Statement], file: str, diagnostics: list[Diagnostic]
) -> Iterator[tuple[JsonObject, bool] | None]:
    """Each statement's Cedar JSON form and whether it is a template (None: diagnosed).

    Cedar parses PARSE_CHUNK statements per call (a call costs ~60 us before any policy); a
    chunk with a problem is parsed again statement by statement, to say where it is.
    """
    for start in range(0, len(statements), PARSE_CHUNK):
        chunk = statements[start : start + PARSE_CHUNK]
        found = _parse_chunk([s.text for s in chunk])
        if found is None:
            for statement in chunk:
                yield _parse_statement(statement.text, file, statement.line, diagnostics)
            continue
        for statement, (est, is_template) in zip(chunk, found, strict=True):
            yield _checked(est, is_template, file, statement.line, diagnostics)


def _parse_chunk(texts: list[str]) -> list[tuple[JsonObject, bool]] | None:
    """Parse statements in one call; None unless each is exactly one policy (Cedar numbers
    them ``policy0``, ``policy1``, ... in order, across policies and templates)."""
    try:
        document = cedar.policy_to_json("\n".join(texts))
    except CedarError:
        return None
    static, templates = document.get("staticPolicies", {}), document.get("templates", {})
    if len(static) + len(templates) != len(texts):
        return None
    found = []
    for number in range(len(texts)):
        key = f"policy{number}"
        if key not in static and key not in templates:
            return None
        found.append((static.get(key) or templates[key], key not in static))
    return found


def _parse_statement(
    text: str, file: str, line: int, diagnostics: list[Diagnostic]
) -> tuple[JsonObject, bool] | None:
    try:
        document = cedar.policy_to_json(text)
    except CedarError as exc:
        diagnostics.append(Diagnostic(file, line, f"syntax error: {exc}"))
        return None
    static, templates = document.get("staticPolicies", {}), document.get("templates", {})
    if len(static) + len(templates) != 1:
        diagnostics.append(Diagnostic(file, line, "expected exactly one policy in this statement"))
        return None
    est: JsonObject = next(iter({**static, **templates}.values()))
    return _checked(est, not static, file, line, diagnostics)


def _checked(
    est: JsonObject, is_template: bool, file: str, line: int, diagnostics: list[Diagnostic]
) -> tuple[JsonObject, bool] | None:
    if est.get("annotations", {}).get("id") == "":
        diagnostics.append(Diagnostic(file, line, "@id annotation must not be empty"))
        return None
    return est, is_template


def _check_unique_ids(parsed: list[_Parsed], diagnostics: list[Diagnostic]) -> None:
    first: dict[str, PolicyInfo] = {}
    for item in parsed:
        seen = first.setdefault(item.info.id, item.info)
        if seen is not item.info:
            diagnostics.append(
                Diagnostic(
                    item.info.file,
                    item.info.line,
                    f"duplicate policy id {item.info.id!r} (first defined at {seen.location})",
                )
            )


def store_version(root: Path) -> str:
    """Content hash of a store's policies, schema and settings (not its entities)."""
    digest = hashlib.sha256(b"verdict-store-v1\0")
    files = [*policy_files(root), root / SCHEMA_TEXT, root / SCHEMA_JSON, root / SETTINGS_FILE]
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:24]

"""Load policy stores from disk into immutable snapshots, collecting file:line diagnostics."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verdict import cedar
from verdict.cedar import CedarError, SchemaHandle
from verdict.cedar_json import parse_uid
from verdict.errors import Diagnostic, PolicyLoadError
from verdict.files import FileReadError, is_regular, read_text
from verdict.model import EntityUid, JsonObject
from verdict.policy.links import LINKS_FILES, Link, read_links
from verdict.policy.positions import locate_in_policy, locate_schema_error, locate_syntax_error
from verdict.policy.snapshot import (
    PolicyInfo,
    PolicySnapshot,
    StoreSnapshot,
    ValidationMode,
)
from verdict.policy.splitter import split_statements
from verdict.policy.store_settings import SETTINGS_FILE, read_store_settings

SCHEMA_TEXT = "schema.cedarschema"
SCHEMA_JSON = "schema.cedarschema.json"
ENTITIES_FILE = "entities.json"


@dataclass
class _Parsed:
    """One parsed policy: its info, Cedar JSON form and source text."""

    info: PolicyInfo
    est: JsonObject
    text: str


def load_policy_stores(stores_dir: Path, default_store: str | None = None) -> PolicySnapshot:
    """Load every subfolder of ``stores_dir`` as a store; raise PolicyLoadError on any problem.

    The default store (used by requests naming none) is ``default_store``, which must exist,
    else the only store; with several stores and none chosen there is no default, and a
    request must name its store (a multi-tenant server needs no default tenant).
    """
    roots = store_roots(stores_dir)
    diagnostics: list[Diagnostic] = []
    stores: dict[str, StoreSnapshot] = {}
    for root in roots:
        try:
            stores[root.name] = load_store(root)
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


def store_roots(stores_dir: Path) -> list[Path]:
    """The store folders under ``stores_dir``, by name; hidden ones (a ConfigMap's ``..data``,
    an editor's ``.swp`` folder) are not stores. PolicyLoadError if the folder is missing."""
    if not stores_dir.is_dir():
        raise PolicyLoadError([Diagnostic(str(stores_dir), 0, "policy stores folder not found")])
    return sorted(p for p in stores_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_store(root: Path) -> StoreSnapshot:
    """Load one policy store folder; raise PolicyLoadError listing every problem found."""
    _check_regular_files(root)
    diagnostics: list[Diagnostic] = []
    schema = _load_schema(root, diagnostics)
    entities = root / ENTITIES_FILE
    # A schema file that fails to parse is one error, not also "strict needs a schema".
    has_schema = schema is not None or any((root / n).is_file() for n in (SCHEMA_TEXT, SCHEMA_JSON))
    settings = read_store_settings(root, has_schema, diagnostics, has_entities=entities.is_file())
    parsed = list(_parse_policy_files(root, diagnostics))
    _check_unique_ids(parsed, diagnostics)
    if schema is not None and settings.validation is ValidationMode.STRICT and not diagnostics:
        for issue in cedar.validate([p.text for p in parsed], schema):
            item = parsed[issue.position]
            at = locate_in_policy(item.text, item.info.line, issue.message)
            message = f"policy {item.info.id!r} fails schema validation: {issue.message}"
            diagnostics.append(Diagnostic(item.info.file, at, message))
    static = {p.info.id: p.est for p in parsed if not p.info.is_template}
    templates = {p.info.id: p.est for p in parsed if p.info.is_template}
    taken = {p.info.id: p.info.location for p in parsed}
    links = read_links(root, templates, taken, diagnostics)
    if diagnostics:
        raise PolicyLoadError(diagnostics)
    try:
        policy_set = cedar.build_policy_set(static, templates, [k.to_cedar() for k in links])
    except CedarError as exc:
        raise PolicyLoadError([Diagnostic(root.name, 0, f"policy set rejected: {exc}")]) from None
    infos = [p.info for p in parsed] + [_link_info(k, templates[k.template]) for k in links]
    literal = {u for p in parsed for u in _literal_uids(p.est)}
    literal.update(uid for link in links for uid in link.values.values())
    return StoreSnapshot(
        store_id=root.name,
        root=root,
        policies={info.id: info for info in infos},
        policy_set=policy_set,
        schema=schema,
        settings=settings,
        version=store_version(root),
        literal_uids=frozenset(literal),
        entities_file=entities if entities.is_file() else None,
        entities_version=file_version(entities),
        schema_version=file_version(root / SCHEMA_TEXT) + file_version(root / SCHEMA_JSON),
        rank={info.id: rank for rank, info in enumerate(infos)},
    )


def _link_info(link: Link, template: JsonObject) -> PolicyInfo:
    """A linked policy as the rest of Verdict sees it: a static policy written in the links file."""
    return PolicyInfo(
        id=link.id,
        file=link.file,
        line=link.line,
        effect=str(template.get("effect", "")),
        is_template=False,
        description=f"link of template {link.template!r}",
        fingerprint=fingerprint({"template": template, "values": link.to_cedar()["values"]}),
        template=link.template,
    )


def fingerprint(document: JsonObject) -> str:
    """A short, stable hash of a JSON document (keys sorted)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SourcePolicy:
    """A policy as written: where, its Cedar JSON form, its text (for authoring checks)."""

    info: PolicyInfo
    est: JsonObject
    text: str


def read_source_policies(root: Path) -> list[SourcePolicy]:
    """Every policy and template of a store as written (after a successful load_store)."""
    diagnostics: list[Diagnostic] = []
    parsed = [SourcePolicy(p.info, p.est, p.text) for p in _parse_policy_files(root, diagnostics)]
    if diagnostics:
        raise PolicyLoadError(diagnostics)
    return parsed


def _check_regular_files(root: Path) -> None:
    """A FIFO, device or folder under a store's file names is an error, never silently skipped."""
    names = (SCHEMA_TEXT, SCHEMA_JSON, SETTINGS_FILE, ENTITIES_FILE, *LINKS_FILES)
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
    shown = f"{root.name}/{path.name}"
    try:
        text = read_text(path)
    except FileReadError as exc:
        diagnostics.append(Diagnostic(shown, 0, str(exc)))
        return None
    try:
        return cedar.parse_schema(text, is_json=path == json_path)
    except CedarError as exc:
        line = _schema_error_line(text, str(exc), is_json=path == json_path)
        diagnostics.append(Diagnostic(shown, line, f"invalid schema: {exc}"))
        return None


def _schema_error_line(text: str, message: str, *, is_json: bool) -> int:
    if not is_json:
        return locate_schema_error(text, message)
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.lineno
    return 1


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
        for position, statement in enumerate(split_statements(source)):
            parsed = _parse_statement(statement.text, shown, statement.line, diagnostics)
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
                fingerprint=fingerprint(est),
            )
            yield _Parsed(info, est, statement.text)


def _parse_statement(
    text: str, file: str, line: int, diagnostics: list[Diagnostic]
) -> tuple[JsonObject, bool] | None:
    try:
        document = cedar.policy_to_json(text)
    except CedarError as exc:
        at, message = locate_syntax_error(text, line, str(exc))
        diagnostics.append(Diagnostic(file, at, f"syntax error: {message}"))
        return None
    static, templates = document.get("staticPolicies", {}), document.get("templates", {})
    if len(static) + len(templates) != 1:
        diagnostics.append(Diagnostic(file, line, "expected exactly one policy in this statement"))
        return None
    est: JsonObject = next(iter({**static, **templates}.values()))
    if est.get("annotations", {}).get("id") == "":
        diagnostics.append(Diagnostic(file, line, "@id annotation must not be empty"))
        return None
    return est, not static


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


def _literal_uids(est: Any) -> Iterator[EntityUid]:
    """Uids a policy names literally: scope constraints and entity literals in conditions."""
    stack = [est]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in ("entity", "__entity") and (uid := parse_uid(value)) is not None:
                    yield uid
                elif key == "entities" and isinstance(value, list):
                    yield from (u for v in value if (u := parse_uid(v)) is not None)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def file_version(path: Path) -> str:
    """A content hash of one file, "" when it does not exist (or is not a regular file)."""
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:24]


def store_version(root: Path) -> str:
    """Content hash of a store's policies, schema and settings (not its entities)."""
    digest = hashlib.sha256(b"verdict-store-v1\0")
    files = [*policy_files(root), root / SCHEMA_TEXT, root / SCHEMA_JSON, root / SETTINGS_FILE]
    files += [root / name for name in LINKS_FILES]
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:24]

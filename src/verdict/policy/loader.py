"""Load policy stores from disk into immutable snapshots, collecting file:line diagnostics."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from verdict import cedar
from verdict.cedar import CedarError, SchemaHandle
from verdict.errors import Diagnostic, PolicyLoadError
from verdict.files import (
    FileAbsentError,
    FileReadError,
    confined_reads,
    content_hash,
    exists,
    is_regular,
    pinned_listing,
    pinned_reads,
    read_bytes,
    read_store_text,
    resolved_inside,
)
from verdict.model import EntityUid, JsonObject
from verdict.policy.file_limits import MAX_ENTITIES_FILE_BYTES, MAX_POLICY_FILE_BYTES
from verdict.policy.index import (
    PolicyEntry,
    PolicyIndex,
    action_parents,
    link_entry,
    static_entry,
    template_part,
)
from verdict.policy.layout import SCHEMA_JSON, SCHEMA_TEXT
from verdict.policy.links import LINKS_FILES, Link, read_links
from verdict.policy.policy_sets import SelectionCacheLimits
from verdict.policy.positions import locate_in_policy, locate_schema_error, locate_syntax_error
from verdict.policy.references import literal_uids, read_uids
from verdict.policy.seal import (
    SEAL_FILE,
    SEALED_ABSENT,
    Seal,
    digest_of,
    read_seal,
    seal_problems,
)
from verdict.policy.snapshot import (
    PolicyInfo,
    PolicySnapshot,
    StoreSnapshot,
    ValidationMode,
)
from verdict.policy.splitter import Statement, split_statements
from verdict.policy.store_settings import SETTINGS_FILE, read_store_settings
from verdict.schema_shape.bounds import type_bound_problem

PARSE_CHUNK = 256  # statements per parse call
VALIDATE_CHUNK = 1_000  # policies per validation call: Cedar holds a parsed chunk at once
ENTITIES_FILE = "entities.json"
# A store's files besides its *.cedar files; all but the seal are sealed.
SEALED_FILE_NAMES = (SCHEMA_TEXT, SCHEMA_JSON, SETTINGS_FILE, ENTITIES_FILE, *LINKS_FILES)
STORE_FILE_NAMES = (*SEALED_FILE_NAMES, SEAL_FILE)
REQUIRED_SEAL = (
    "missing: this server loads sealed stores only (VERDICT_REQUIRE_SEAL); seal the store "
    "with `verdict seal` once its files are written"
)
# Names listed below one store (files and folders, at every depth) before its load is refused:
# a real store holds tens; 100,000 are listed in ~0.1 s.
MAX_STORE_NAMES = 100_000


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
    *,
    require_seal: bool = False,
) -> PolicySnapshot:
    """Load every subfolder of ``stores_dir`` as a store; raise PolicyLoadError on any problem.

    The default store (used by requests naming none) is ``default_store``, which must exist,
    else the only store; with several stores and none chosen there is no default, and a
    request must name its store (a multi-tenant server needs no default tenant).
    ``require_seal``: a store without a seal (policy/seal.py) is refused.
    """
    roots = store_roots(stores_dir)
    diagnostics: list[Diagnostic] = []
    stores: dict[str, StoreSnapshot] = {}
    for root in roots:
        try:
            stores[root.name] = load_store(root, cache, require_seal=require_seal)
        except PolicyLoadError as exc:
            diagnostics.extend(exc.diagnostics)
    if not roots:
        diagnostics.append(Diagnostic(str(stores_dir), 0, "no policy stores (subfolders) found"))
    if diagnostics:
        raise PolicyLoadError(diagnostics)
    if default_store and default_store not in stores:
        message = f"default store {default_store!r} is not one of {sorted(stores)}"
        near = difflib.get_close_matches(default_store, sorted(stores), n=1)
        message += f"; did you mean {near[0]!r}?" if near else ""
        raise PolicyLoadError([Diagnostic(str(stores_dir), 0, message)])
    default = default_store or (roots[0].name if len(roots) == 1 else "")
    return PolicySnapshot(stores=stores, default_store=default)


def store_roots(stores_dir: Path) -> list[Path]:
    """The store folders under ``stores_dir``, by name; hidden ones (a ConfigMap's ``..data``,
    an editor's ``.swp`` folder) are not stores. PolicyLoadError if the folder is missing."""
    if not stores_dir.is_dir():
        raise PolicyLoadError([Diagnostic(str(stores_dir), 0, "policy stores folder not found")])
    return sorted(p for p in stores_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_store(
    root: Path, cache: SelectionCacheLimits | None = None, *, require_seal: bool = False
) -> StoreSnapshot:
    """Load one policy store folder; raise PolicyLoadError listing every problem found. Its
    version is the hash of exactly the bytes parsed, however the files change meanwhile.
    Its files must lie inside the store folder, links resolved (a link to a secret of the
    server's, or into another tenant's store, is refused unread, never quoted by a parse
    error), and the store folder inside the stores folder (check_store_folder). A sealed
    store loads only if its files match its seal; ``require_seal``: only a sealed store."""
    real = check_store_folder(root)
    with pinned_reads(), confined_reads(real):
        seal = _checked_seal(root, require_seal)
        return _load_store(root, cache, seal)


def sealable_digests(
    root: Path, check_entities: Callable[[StoreSnapshot], object]
) -> dict[str, str]:
    """For ``verdict seal``: load the store whatever its old seal says (PolicyLoadError if it
    does not load), have ``check_entities`` read its entities.json, and return the digests of
    exactly the bytes that were checked (one pinned block)."""
    real = check_store_folder(root)
    with pinned_reads(), confined_reads(real):
        check_entities(_load_store(root, None, None))
        return store_digests(root, entities_pinned=True)


def _checked_seal(root: Path, required: bool) -> Seal | None:
    """The store's seal once its files match it (PolicyLoadError naming each file that does
    not); None for a store without one, unless ``required``."""
    seal = read_seal(root)
    if seal is None:
        if required:
            raise PolicyLoadError([Diagnostic(f"{root.name}/{SEAL_FILE}", 0, REQUIRED_SEAL)])
        return None
    problems = seal_problems(root, seal, store_digests(root))
    if problems:
        raise PolicyLoadError(problems)
    return seal


def store_digests(root: Path, *, entities_pinned: bool = False) -> dict[str, str]:
    """Each file of the store (relative POSIX path) and the digest of its bytes: policy files,
    schema, settings and links as the load reads them (pinned within it); entities.json
    streamed, unless ``entities_pinned`` (its readers check the bytes they parse again). A
    file present but unusable gets a digest naming why, which matches no seal."""
    found: dict[str, str] = {}
    for path in [*policy_files(root), *(root / name for name in SEALED_FILE_NAMES)]:
        name = path.relative_to(root).as_posix()
        try:
            if name != ENTITIES_FILE:
                found[name] = digest_of(read_bytes(path, MAX_POLICY_FILE_BYTES))
            elif entities_pinned:
                found[name] = digest_of(read_bytes(path, MAX_ENTITIES_FILE_BYTES))
            elif exists(path):  # its presence pinned: the load's answer too
                found[name] = "sha256:" + content_hash(path, MAX_ENTITIES_FILE_BYTES)
        except FileAbsentError:
            continue
        except FileReadError as exc:
            found[name] = f"unusable: {exc}"
    return found


def _rejected_set(
    store: str, parsed: list[_Parsed], schema: SchemaHandle | None, exc: Exception
) -> Diagnostic:
    """Cedar refused the store's policy set: at the first policy it refuses alone, when one
    does (a policy whose Cedar JSON form nests past serde_json's 128 levels: ~60 chained
    operators, attack round 18), else at the store."""
    for policy in parsed:
        try:
            build_index([policy], schema, SelectionCacheLimits(), [])
        except (CedarError, ValueError) as alone:
            return Diagnostic(policy.info.file, policy.info.line, f"policy rejected: {alone}")
    return Diagnostic(store, 0, f"policy set rejected: {exc}")


def check_store_folder(root: Path) -> str:
    """The store folder's real path; PolicyLoadError unless it lies inside the stores folder
    (files.resolved_inside)."""
    try:
        return resolved_inside(root)
    except FileReadError as exc:
        raise PolicyLoadError([Diagnostic(root.name, 0, str(exc))]) from None


def _load_store(root: Path, cache: SelectionCacheLimits | None, seal: Seal | None) -> StoreSnapshot:
    _check_regular_files(root)
    diagnostics: list[Diagnostic] = []
    schema = _load_schema(root, diagnostics)
    entities = root / ENTITIES_FILE
    # A schema file that fails to parse is one error, not also "strict needs a schema".
    # Whether a file exists is asked of the pin, as its bytes are (files.exists).
    has_entities = exists(entities)
    has_schema = schema is not None or any(exists(root / n) for n in (SCHEMA_TEXT, SCHEMA_JSON))
    settings = read_store_settings(root, has_schema, diagnostics, has_entities=has_entities)
    parsed = list(_parse_policy_files(root, diagnostics))
    _check_unique_ids(parsed, diagnostics)
    if schema is not None and settings.validation is ValidationMode.STRICT and not diagnostics:
        _validate(parsed, schema, diagnostics)
    templates = {p.info.id: p.template for p in parsed if p.template is not None}
    links = read_links(root, templates, {p.info.id: p.info.location for p in parsed}, diagnostics)
    if schema is not None and settings.validation is ValidationMode.STRICT and not diagnostics:
        _validate_links(links, templates, schema, diagnostics)
    if diagnostics:
        raise PolicyLoadError(diagnostics)
    try:
        index = build_index(parsed, schema, cache or SelectionCacheLimits(), links)
    except (CedarError, ValueError) as exc:
        raise PolicyLoadError([_rejected_set(root.name, parsed, schema, exc)]) from None
    infos = [p.info for p in parsed] + [_link_info(k, templates[k.template]) for k in links]
    named = {u for p in parsed for u in p.named}
    named.update(uid for link in links for uid in link.values.values())
    return StoreSnapshot(
        store_id=root.name,
        root=root,
        policies={info.id: info for info in infos},
        index=index,
        schema=schema,
        settings=settings,
        version=store_version(root),
        # Link values stand in scopes only: named (the request-entity rule), never read.
        literal_uids=frozenset(named),
        read_uids=frozenset(u for p in parsed for u in p.read),
        entities_file=entities if has_entities else None,
        # Of the file the load found (its presence pinned): a file that appeared since is a
        # change the next reload sees, never a version without its entities.
        entities_version=entities_file_version(root) if has_entities else "",
        schema_version=schema_file_version(root),
        rank={info.id: rank for rank, info in enumerate(infos)},
        sealed=seal is not None,
        sealed_entities="" if seal is None else seal.files.get(ENTITIES_FILE, SEALED_ABSENT),
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


def build_index(
    parsed: Sequence[_Parsed],
    schema: SchemaHandle | None,
    cache: SelectionCacheLimits,
    links: Sequence[Link] = (),
) -> PolicyIndex:
    """The store's policy index: its static policies and ``links`` of its templates."""
    templates = {p.info.id: p.template for p in parsed if p.template is not None}
    entries = [p.entry for p in parsed if p.entry is not None]
    entries += [link_entry(link.to_cedar(), templates) for link in links]
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
            item = chunk[issue.position]
            at = locate_in_policy(item.text, item.info.line, issue.message)
            message = f"policy {item.info.id!r} fails schema validation: {issue.message}"
            diagnostics.append(Diagnostic(item.info.file, at, message))


def _validate_links(
    links: Sequence[Link],
    templates: dict[str, JsonObject],
    schema: SchemaHandle,
    diagnostics: list[Diagnostic],
) -> None:
    """Each link validated as the static policy it creates: under ``strict`` a link to a type
    the schema lacks (``Employe::"uma"``), or of a type its slot's actions never take, is
    refused like the same policy written out. Unchecked, a forbid template linked with a
    typo loaded and never applied to anyone."""
    for start in range(0, len(links), VALIDATE_CHUNK):
        chunk = links[start : start + VALIDATE_CHUNK]
        texts = [
            cedar.static_policy_text(_linked_form(link, templates[link.template])) for link in chunk
        ]
        for issue in cedar.validate(texts, schema):
            link = chunk[issue.position]
            message = f"link {link.id!r} fails schema validation: {issue.message}"
            diagnostics.append(Diagnostic(link.file, link.line, message))


def _linked_form(link: Link, template: JsonObject) -> JsonObject:
    """The template's JSON form with each slot of its scope replaced by the link's uid."""

    def filled(node: object) -> object:
        if isinstance(node, dict):
            if "slot" in node:
                rest = {k: filled(v) for k, v in node.items() if k != "slot"}
                return {**rest, "entity": link.values[str(node["slot"])].to_json()}
            return {k: filled(v) for k, v in node.items()}
        return node

    form = dict(template)
    form.pop("annotations", None)  # positions in the validator's answer are ours, not ids
    for part in ("principal", "resource"):
        if part in form:
            form[part] = filled(form[part])
    return form


def _check_regular_files(root: Path) -> None:
    """A FIFO, device or folder under a store's file names is an error, never silently skipped."""
    odd = [
        root / name
        for name in STORE_FILE_NAMES
        if exists(root / name) and not is_regular(root / name)
    ]
    if odd:
        raise PolicyLoadError(
            [Diagnostic(f"{root.name}/{path.name}", 0, "not a regular file") for path in odd]
        )


def _load_schema(root: Path, diagnostics: list[Diagnostic]) -> SchemaHandle | None:
    text_path, json_path = root / SCHEMA_TEXT, root / SCHEMA_JSON
    if exists(text_path) and exists(json_path):
        diagnostics.append(
            Diagnostic(
                f"{root.name}/{SCHEMA_JSON}",
                1,
                f"both {SCHEMA_TEXT} and {SCHEMA_JSON} exist; keep one",
            )
        )
        return None
    path = text_path if exists(text_path) else json_path if exists(json_path) else None
    if path is None:
        return None
    shown = f"{root.name}/{path.name}"
    try:
        text = read_store_text(path, MAX_POLICY_FILE_BYTES)
    except FileReadError as exc:
        diagnostics.append(Diagnostic(shown, 0, str(exc)))
        return None
    try:
        schema = cedar.parse_schema(text, is_json=path == json_path)
    except CedarError as exc:
        line = _schema_error_line(text, str(exc), is_json=path == json_path)
        diagnostics.append(Diagnostic(shown, line, f"invalid schema: {exc}"))
        return None
    bound = type_bound_problem(cedar.schema_text(schema))
    if bound is not None:  # Cedar would write such a type out for every mismatched value
        name, problem = bound
        line = next((n for n, text_line in enumerate(text.splitlines(), 1) if name in text_line), 1)
        diagnostics.append(Diagnostic(shown, line, f"invalid schema: {problem}"))
        return None
    return schema


def _schema_error_line(text: str, message: str, *, is_json: bool) -> int:
    if not is_json:
        return locate_schema_error(text, message)
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.lineno
    return 1


def policy_files(root: Path) -> list[Path]:
    """Every ``*.cedar`` file below a store, in sorted relative-path order (listed once per
    pinned block: the parse and the version see the same files). PolicyLoadError when a
    folder of the store cannot be listed or the store holds too many names."""

    def listing() -> list[Path]:
        found = _walk_policy_files(root)
        return sorted(found, key=lambda p: p.relative_to(root).as_posix())

    return pinned_listing(f"cedar:{root}", listing)


def store_folders_and_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The folders walked below ``root`` (itself first) and the ``*.cedar`` files found: for
    the reload's settle, which needs the folders too (a file removed changes its folder)."""
    folders: list[Path] = []
    files = _walk_policy_files(root, folders)
    return folders, files


def _walk_policy_files(root: Path, folders: list[Path] | None = None) -> list[Path]:
    """The ``*.cedar`` names below ``root`` (what ``rglob`` found: folders reached through a
    symbolic link are not entered), walked with a list instead of recursion.

    Not ``rglob``: it skipped a folder it may not list (PermissionError) without a word, so a
    ``chmod 000`` on a folder of forbids reloaded the store without them (ALLOW where the files
    deny); and it recursed once per level, so ~1,000 nested folders raised RecursionError out of
    every reload of every store. Names are counted so a store folder pointing at ``/`` or a
    dump of millions of files fails that store's load instead of holding the reload thread."""
    found: list[Path] = []
    pending = [root]
    listed = 0
    while pending:
        folder = pending.pop()
        if folders is not None:
            folders.append(folder)
        try:
            with os.scandir(folder) as entries:
                names = list(entries)
            listed += len(names)
            if listed > MAX_STORE_NAMES:
                message = f"more than {MAX_STORE_NAMES:,} files and folders below the store"
                raise PolicyLoadError([Diagnostic(root.name, 0, message)])
            for entry in names:
                if entry.name.endswith(".cedar"):
                    _check_name(root, folder, entry.name)
                    found.append(Path(entry.path))
                # The kubelet's own folders (``..<timestamp>/``, behind the ``..data`` link)
                # are not walked: a ConfigMap mounted on a store folder would give every file
                # twice, there and through its link. Other hidden folders are walked: a
                # forbid kept in ``.shared/`` must not be dropped without a word.
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".."):
                    pending.append(Path(entry.path))
        except OSError as exc:
            shown = "/".join((root.name, *folder.relative_to(root).parts))
            message = f"cannot list the folder: {exc.strerror}"
            raise PolicyLoadError([Diagnostic(shown, 0, message)]) from None
    return found


def _check_name(root: Path, folder: Path, name: str) -> None:
    """PolicyLoadError for a policy file whose name is not UTF-8: its ids, the version and
    the seal need a text name (one such file crashed every reload and `verdict seal`)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = "/".join((root.name, *folder.relative_to(root).parts))
        message = f"policy file name {ascii(name)[:120]} is not UTF-8: rename it"
        raise PolicyLoadError([Diagnostic(shown, 0, message)]) from None


def _parse_policy_files(root: Path, diagnostics: list[Diagnostic]) -> Iterator[_Parsed]:
    for path in policy_files(root):
        relative = path.relative_to(root).as_posix()
        shown = f"{root.name}/{relative}"
        try:
            source = read_store_text(path, MAX_POLICY_FILE_BYTES)
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
                fingerprint=fingerprint(est),
            )
            yield _Parsed(
                info,
                statement.text,
                None if is_template else static_entry(policy_id, est),
                est if is_template else None,
                frozenset(literal_uids(est)),
                read_uids(est),
            )


def syntax_problems(text: str, file: str) -> list[Diagnostic]:
    """The problems a load finds in one policy file's ``text``, each at its line."""
    diagnostics: list[Diagnostic] = []
    for _ in _parse_all(split_statements(text), file, diagnostics):
        pass
    return diagnostics


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
    found: list[tuple[JsonObject, bool]] = []
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
        at, message = locate_syntax_error(text, line, str(exc))
        diagnostics.append(Diagnostic(file, at, f"syntax error: {message}"))
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
    files += [root / name for name in LINKS_FILES]
    files.append(root / SEAL_FILE)  # a store sealed again loads again
    for path in files:
        try:  # the bytes a pinned load parsed, when called inside one (same bound: same pin)
            content = read_bytes(path, MAX_POLICY_FILE_BYTES)
        except FileReadError as exc:
            if not exists(path):  # absent: not part of the store
                continue
            # Present but unusable (too large, a FIFO, unreadable): it still changes the
            # version, so a hot reload tries the store and reports the file instead of
            # keeping the running version as "unchanged".
            content = b"\0unusable: " + str(exc).encode()
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(content + b"\0")
    return "sha256:" + digest.hexdigest()[:24]


def entities_file_version(root: Path, *, pinned: bool = False) -> str:
    """The content version of a store's entities.json ("" without one); ``pinned``: of the
    bytes the enclosing ``pinned_reads`` block read (or reads now and keeps), not streamed."""
    return file_version(root / ENTITIES_FILE, MAX_ENTITIES_FILE_BYTES, pinned=pinned)


def schema_file_version(root: Path) -> str:
    """The content version of a store's schema file (whichever of the two forms exists)."""
    return file_version(root / SCHEMA_TEXT, MAX_POLICY_FILE_BYTES) + file_version(
        root / SCHEMA_JSON, MAX_POLICY_FILE_BYTES
    )


def file_version(path: Path, max_bytes: int, *, pinned: bool = False) -> str:
    """A content hash of one file, "" when it does not exist. A file present but unusable
    (not a regular file, larger than ``max_bytes``) gets a version naming why, without being
    read: a reload then sees a change and reports the file. Opened without blocking and
    bounded like every read: a FIFO swapped in or a 1 TiB sparse file held reloads (and the
    process's exit) for good or for an hour."""
    try:
        if pinned:
            return version_of_digest(digest_of(read_bytes(path, max_bytes)))
        return version_of_digest("sha256:" + content_hash(path, max_bytes))
    except FileAbsentError:
        return ""
    except FileReadError as exc:
        return f"unusable: {exc}"


def files_as_loaded(store: StoreSnapshot) -> bool:
    """Whether the store's files hash now to the versions its load found: policies, schema,
    settings, links and seal, and entities.json (one added or changed since counts)."""
    now = (store_version(store.root), entities_file_version(store.root))
    return now == (store.version, store.entities_version)


def version_of_digest(digest: str) -> str:
    """A file's content version (``file_version``) from its digest (``seal.digest_of``): the
    digest cut to 24 hex digits."""
    return digest[: len("sha256:") + 24]


@dataclass(frozen=True)
class SourcePolicy:
    """A policy as written: where, its Cedar JSON form, its text (for authoring checks)."""

    info: PolicyInfo
    est: JsonObject
    text: str


def read_source_policies(root: Path) -> list[SourcePolicy]:
    """Every policy and template of a store as written, each parsed again on its own (the
    loader keeps no Cedar JSON trees); for the offline authoring checks."""
    parsed = list(_parse_policy_files(root, []))
    found: list[SourcePolicy] = []
    for item in parsed:
        document = cedar.policy_to_json(item.text)
        forms = {**document.get("staticPolicies", {}), **document.get("templates", {})}
        found.extend(SourcePolicy(item.info, est, item.text) for est in forms.values())
    return found

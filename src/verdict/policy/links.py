"""Template links (``links.json`` or ``links.yaml`` in a store): link id, template id, slot values.

A link turns a template (``?principal``, ``?resource``) into a policy that behaves like a static
one: its id is the link id, it is reported as a determining policy and counted by coverage.
Every problem is reported with the links file's line, and refuses the whole store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from verdict.cedar_json import parse_uid
from verdict.errors import Diagnostic, RequestError
from verdict.files import FileReadError, exists, read_store_text
from verdict.model import EntityUid, JsonObject
from verdict.policy.file_limits import MAX_POLICY_FILE_BYTES
from verdict.uid_arg import parse_uid_arg

LINKS_FILES = ("links.json", "links.yaml", "links.yml")
SLOTS = ("?principal", "?resource")
_KEYS = {"id", "template", "values"}


@dataclass(frozen=True)
class Link:
    """One checked link: the policy it creates, where it was written, and its slot values."""

    id: str
    template: str
    values: Mapping[str, EntityUid]
    file: str
    line: int

    def to_cedar(self) -> JsonObject:
        """The entry of Cedar's ``templateLinks`` array."""
        return {
            "templateId": self.template,
            "newId": self.id,
            "values": {slot: uid.to_json() for slot, uid in self.values.items()},
        }


def links_file(root: Path) -> Path | None:
    """The store's links file, if it has one (two of them is a load error, see read_links)."""
    found = [root / name for name in LINKS_FILES if exists(root / name)]
    return found[0] if found else None


def template_slots(template: JsonObject) -> frozenset[str]:
    """The slots a template's scope uses (``?principal``, ``?resource``)."""
    slots = set()
    for part in ("principal", "resource"):
        scope = template.get(part, {})
        inner = scope.get("in", {}) if isinstance(scope.get("in"), dict) else {}
        for holder in (scope, inner):
            if isinstance(holder.get("slot"), str):
                slots.add(holder["slot"])
    return frozenset(slots)


def read_links(
    root: Path,
    templates: Mapping[str, JsonObject],
    taken_ids: Mapping[str, str],
    diagnostics: list[Diagnostic],
) -> list[Link]:
    """Read and check the store's links against its ``templates`` and the ids already taken by
    policies (id -> ``file:line``); problems go to ``diagnostics`` with the links file's lines."""
    present = [name for name in LINKS_FILES if exists(root / name)]
    if not present:
        return []
    shown = f"{root.name}/{present[0]}"
    if len(present) > 1:
        diagnostics.append(Diagnostic(shown, 0, f"one links file per store, found {present}"))
        return []
    try:
        text = read_store_text(root / present[0], MAX_POLICY_FILE_BYTES)
    except FileReadError as exc:
        diagnostics.append(Diagnostic(shown, 0, str(exc)))
        return []
    entries = _entries(text, present[0].endswith(".json"), shown, diagnostics)
    links: list[Link] = []
    seen: dict[str, int] = {}
    for line, entry in entries:
        link = _check(entry, line, shown, templates, diagnostics)
        if link is None:
            continue
        if link.id in taken_ids:
            message = f"link id {link.id!r} is already a policy id ({taken_ids[link.id]})"
            diagnostics.append(Diagnostic(shown, line, message))
        elif link.id in seen:
            message = f"duplicate link id {link.id!r} (first at line {seen[link.id]})"
            diagnostics.append(Diagnostic(shown, line, message))
        else:
            seen[link.id] = line
            links.append(link)
    return links


def _entries(
    text: str, is_json: bool, shown: str, diagnostics: list[Diagnostic]
) -> list[tuple[int, Any]]:
    """The top-level list's items with the line each starts on."""
    try:
        return _read_entries(text, is_json, shown, diagnostics)
    except RecursionError:  # the parsers recurse per level (attack round 19: 500 nested `[`)
        diagnostics.append(Diagnostic(shown, 1, "nested too deeply"))
        return []


def _read_entries(
    text: str, is_json: bool, shown: str, diagnostics: list[Diagnostic]
) -> list[tuple[int, Any]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        diagnostics.append(Diagnostic(shown, line, "not valid YAML/JSON"))
        return []
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            diagnostics.append(Diagnostic(shown, exc.lineno, f"not valid JSON: {exc.msg}"))
            return []
    else:
        data = yaml.safe_load(text)
    if data is None:
        return []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        diagnostics.append(Diagnostic(shown, 1, "must be a list of links"))
        return []
    return [(item.start_mark.line + 1, value) for item, value in zip(node.value, data, strict=True)]


def _check(
    entry: Any,
    line: int,
    shown: str,
    templates: Mapping[str, JsonObject],
    diagnostics: list[Diagnostic],
) -> Link | None:
    def problem(message: str) -> None:
        diagnostics.append(Diagnostic(shown, line, message))

    if not isinstance(entry, dict):
        problem("a link must be an object with id, template and values")
        return None
    for key in sorted(entry.keys() - _KEYS):
        problem(f"unknown key {key!r} (id, template, values)")
    link_id, template_id, values = entry.get("id"), entry.get("template"), entry.get("values")
    if not isinstance(link_id, str) or not link_id:
        problem("id must be a non-empty string")
        return None
    if not isinstance(template_id, str) or template_id not in templates:
        problem(f"link {link_id!r}: template {template_id!r} is not a template of this store")
        return None
    if not isinstance(values, dict):
        problem(f"link {link_id!r}: values must map each slot (?principal, ?resource) to a uid")
        return None
    slots = template_slots(templates[template_id])
    for slot in sorted(slots - values.keys()):
        problem(f"link {link_id!r}: no value for slot {slot} of template {template_id!r}")
    for slot in sorted(values.keys() - slots):
        problem(f"link {link_id!r}: template {template_id!r} has no slot {slot}")
    parsed = dict(_uids(link_id, values, slots, problem))
    if len(parsed) != len(slots) or values.keys() != slots:
        return None
    return Link(link_id, template_id, parsed, shown, line)


def _uids(
    link_id: str, values: Mapping[str, Any], slots: frozenset[str], problem: Any
) -> Iterator[tuple[str, EntityUid]]:
    for slot in sorted(values.keys() & slots):
        value = values[slot]
        uid = parse_uid(value) if isinstance(value, dict) else None
        if isinstance(value, str):
            try:
                uid = parse_uid_arg(value, slot)
            except RequestError:
                uid = None
        if uid is not None:
            yield slot, uid
            continue
        problem(f'link {link_id!r}: {slot} must be a uid (Type::"id" or {{"type", "id"}})')

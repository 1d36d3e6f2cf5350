"""The callers file: which caller may call which method groups on which policy stores."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from verdict._gen.verdict.v1 import admin_pb2 as apb
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict.errors import ConfigError, Diagnostic
from verdict.files import FileReadError, read_text
from verdict.transport.identity import JwtSettings

ALL_STORES = "*"
# Far above any real callers file; a file swapped for /dev/zero or a log must not fill memory.
MAX_CALLERS_BYTES = 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CALLER_KEYS = {"id", "methods", "stores", "token_sha256"}
_JWT_KEYS = {"jwks_file", "issuer", "audience", "algorithms", "leeway_seconds"}


class MethodGroup(StrEnum):
    """What a grant can name instead of single methods."""

    DECISIONS = "decisions"
    # Decisions with ``explain`` set: about twice a decision's cost, and they show which
    # conditions of which policies held; granted on its own, beside "decisions".
    EXPLAIN = "explain"
    ENTITY_READS = "entity-reads"
    ENTITY_WRITES = "entity-writes"
    ADMIN = "admin"


def _method(descriptor: Any, service: str, name: str) -> str:
    return f"/{descriptor.services_by_name[service].full_name}/{name}"


# Every method the server serves is either listed here or open; anything else is refused.
METHOD_GROUPS: Mapping[str, MethodGroup] = {
    _method(pb.DESCRIPTOR, "AuthorizationService", "IsAuthorized"): MethodGroup.DECISIONS,
    _method(pb.DESCRIPTOR, "AuthorizationService", "BatchAuthorize"): MethodGroup.DECISIONS,
    _method(epb.DESCRIPTOR, "EntityService", "GetEntities"): MethodGroup.ENTITY_READS,
    _method(epb.DESCRIPTOR, "EntityService", "PutEntities"): MethodGroup.ENTITY_WRITES,
    _method(epb.DESCRIPTOR, "EntityService", "DeleteEntities"): MethodGroup.ENTITY_WRITES,
    _method(apb.DESCRIPTOR, "AdminService", "ReloadPolicies"): MethodGroup.ADMIN,
    _method(apb.DESCRIPTOR, "AdminService", "ListPolicyStores"): MethodGroup.ADMIN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": MethodGroup.ADMIN,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": MethodGroup.ADMIN,
}
# Probes and load balancers check health without an identity; it reveals only up/down, and
# per-store names only to callers granted the store (transport/health_scope.py).
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


@dataclass(frozen=True)
class Grant:
    """Method groups and policy stores a caller may use; ``stores`` None means every store."""

    groups: frozenset[MethodGroup]
    stores: frozenset[str] | None

    def allows_store(self, store_id: str) -> bool:
        """Whether this grant covers ``store_id`` (already resolved from the default)."""
        return self.stores is None or store_id in self.stores

    def union(self, other: Grant) -> Grant:
        """Grants add up: a caller matched by several entries gets all of them."""
        stores = None if self.stores is None or other.stores is None else self.stores | other.stores
        return Grant(self.groups | other.groups, stores)


_ANY_SEGMENT = ("", "")  # the parts of a lone ``*`` segment: any one segment


@dataclass(frozen=True)
class SpiffeGlob:
    """A SPIFFE-id glob: ``*`` is any text within one path segment, a ``**`` segment is one or
    more whole segments.

    Matched segment by segment without regular expressions: a regex such as
    ``[^/]*a[^/]*a[^/]*b`` backtracks polynomially, and a 2 KB caller id held the event loop
    for seconds (minutes with more stars). This takes O(segments x glob segments) segment
    comparisons, each a few ``str.find`` calls.
    """

    glob: str
    # Each segment's literal parts around its stars; None for a ``**`` segment.
    segments: tuple[tuple[str, ...] | None, ...]

    @classmethod
    def parse(cls, glob: str) -> SpiffeGlob:
        """The glob's segments; ValueError when ``**`` is not a whole segment."""
        segments: list[tuple[str, ...] | None] = []
        for segment in glob.split("/"):
            if segment == "**":
                segments += [_ANY_SEGMENT, None]  # one segment, then any number more
            elif "**" in segment:
                raise ValueError("** must be a whole path segment")
            else:
                segments.append(tuple(segment.split("*")))
        return cls(glob, tuple(segments))

    def match(self, caller: str) -> bool:
        """Whether ``caller`` matches the whole glob."""
        parts = caller.split("/")
        pattern = self.segments
        p = t = 0
        star, mark = -1, 0  # the last ``**`` seen, and the text segment it resumes from
        while t < len(parts):
            if p < len(pattern) and pattern[p] is None:
                star, mark = p, t
                p += 1
            elif p < len(pattern) and _segment_matches(pattern[p], parts[t]):
                p, t = p + 1, t + 1
            elif star >= 0:  # let the last ``**`` take one more segment, and retry after it
                mark += 1
                p, t = star + 1, mark
            else:
                return False
        while p < len(pattern) and pattern[p] is None:
            p += 1
        return p == len(pattern)


def _segment_matches(parts: tuple[str, ...] | None, text: str) -> bool:
    """Whether one segment matches literal ``parts`` joined by ``*`` (leftmost fit is optimal)."""
    assert parts is not None
    if len(parts) == 1:
        return text == parts[0]
    first, *middle, last = parts
    if len(text) < len(first) + len(last) or not text.startswith(first):
        return False
    if not text.endswith(last):
        return False
    position, end = len(first), len(text) - len(last)
    for part in middle:
        found = text.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def glob_pattern(glob: str) -> SpiffeGlob:
    """A SPIFFE-id glob (see ``SpiffeGlob``); ValueError when ``**`` is not a whole segment."""
    return SpiffeGlob.parse(glob)


@dataclass(frozen=True)
class Callers:
    """The parsed callers file."""

    exact: Mapping[str, Grant]
    globs: tuple[tuple[SpiffeGlob, Grant], ...]
    tokens: Mapping[str, str]  # sha256 hex of a static token -> caller id
    jwt: JwtSettings | None = None
    path: str = field(default="")

    def grant_for(self, caller: str) -> Grant | None:
        """Everything granted to ``caller`` by every entry that matches it; None if none does."""
        grant = self.exact.get(caller)
        for pattern, glob_grant in self.globs:
            if pattern.match(caller):
                grant = glob_grant if grant is None else grant.union(glob_grant)
        return grant


def load_callers(path: Path) -> Callers:
    """Parse and check ``path``; raises ConfigError with file:line for every problem found."""
    name = str(path)
    try:
        text = read_text(path, MAX_CALLERS_BYTES)
    except FileReadError as exc:
        raise ConfigError([Diagnostic(name, 0, f"cannot read the callers file ({exc})")]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib says "(at line N, column M)", or "(at end of document)".
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found else len(text.splitlines())
        raise ConfigError([Diagnostic(name, line, f"not valid TOML: {exc}")]) from None
    return _Parser(name, path.parent, text.splitlines()).parse(document)


class _Parser:
    """Turns a TOML document into Callers, collecting every problem with its line."""

    def __init__(self, name: str, folder: Path, lines: list[str]) -> None:
        self.name, self.folder, self.lines = name, folder, lines
        self.problems: list[Diagnostic] = []
        self.headers = [i + 1 for i, ln in enumerate(lines) if ln.strip() == "[[callers]]"]

    def parse(self, document: dict[str, Any]) -> Callers:
        for key in document.keys() - {"callers", "jwt"}:
            self.problem(self.line_of(key, 1), f"unknown key {key!r} (callers, jwt)")
        entries = document.get("callers", [])
        if not isinstance(entries, list) or not entries:
            self.problem(1, "no [[callers]] entries: nobody could call anything")
            entries = []
        exact: dict[str, Grant] = {}
        globs: list[tuple[SpiffeGlob, Grant]] = []
        tokens: dict[str, str] = {}
        for index, entry in enumerate(entries):
            start = self.headers[index] if index < len(self.headers) else 1
            self.caller(entry, start, exact, globs, tokens)
        jwt_settings = self.jwt(document["jwt"]) if "jwt" in document else None
        if self.problems:
            raise ConfigError(self.problems)
        return Callers(exact, tuple(globs), tokens, jwt_settings, self.name)

    def caller(
        self,
        entry: dict[str, Any],
        start: int,
        exact: dict[str, Grant],
        globs: list[tuple[SpiffeGlob, Grant]],
        tokens: dict[str, str],
    ) -> None:
        for key in entry.keys() - _CALLER_KEYS:
            self.problem(self.line_of(key, start), f"unknown key {key!r} ({sorted(_CALLER_KEYS)})")
        caller_id = entry.get("id")
        if not isinstance(caller_id, str) or not caller_id:
            self.problem(self.line_of("id", start), "id must be a non-empty string")
            return
        grant = Grant(self.groups(entry, start), self.stores(entry, start))
        if "*" in caller_id:
            if not caller_id.startswith("spiffe://"):
                self.problem(self.line_of("id", start), "globs are only allowed on spiffe:// ids")
            if "token_sha256" in entry:
                self.problem(self.line_of("token_sha256", start), "tokens need an exact id")
            try:
                globs.append((glob_pattern(caller_id), grant))
            except ValueError as exc:
                self.problem(self.line_of("id", start), str(exc))
            return
        if caller_id in exact:
            self.problem(self.line_of("id", start), f"caller {caller_id!r} is listed twice")
        exact[caller_id] = grant
        for digest in self.strings(entry, "token_sha256", start, required=False):
            if not _HEX64.match(digest):
                self.problem(self.line_of("token_sha256", start), "not a lowercase hex SHA-256")
            elif tokens.setdefault(digest, caller_id) != caller_id:
                self.problem(self.line_of("token_sha256", start), "token given to two callers")

    def groups(self, entry: dict[str, Any], start: int) -> frozenset[MethodGroup]:
        groups: set[MethodGroup] = set()
        for name in self.strings(entry, "methods", start, required=True):
            try:
                groups.add(MethodGroup(name))
            except ValueError:
                known = ", ".join(g.value for g in MethodGroup)
                self.problem(self.line_of("methods", start), f"unknown group {name!r} ({known})")
        return frozenset(groups)

    def stores(self, entry: dict[str, Any], start: int) -> frozenset[str] | None:
        stores = self.strings(entry, "stores", start, required=True)
        return None if ALL_STORES in stores else frozenset(stores)

    def strings(self, entry: dict[str, Any], key: str, start: int, *, required: bool) -> list[str]:
        value = entry.get(key, [] if not required else None)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(self.line_of(key, start), f"{key} must be a list of strings")
            return []
        if required and not value:
            self.problem(self.line_of(key, start), f"{key} must not be empty")
        return list(value)

    def jwt(self, table: object) -> JwtSettings | None:
        start = self.line_of_header("[jwt]")
        if not isinstance(table, dict):
            self.problem(start, "jwt must be a table")
            return None
        for key in table.keys() - _JWT_KEYS:
            self.problem(self.line_of(key, start), f"unknown key {key!r} ({sorted(_JWT_KEYS)})")
        values = {k: table.get(k) for k in ("jwks_file", "issuer", "audience")}
        for key, value in values.items():
            if not isinstance(value, str) or not value:
                self.problem(self.line_of(key, start), f"jwt.{key} must be a non-empty string")
        algorithms = self.strings(table, "algorithms", start, required=True)
        leeway = table.get("leeway_seconds", 30)
        if not isinstance(leeway, int | float) or not 0 <= leeway <= 300:
            self.problem(self.line_of("leeway_seconds", start), "leeway_seconds: 0 to 300")
        if self.problems:
            return None
        return JwtSettings(
            self.folder / str(values["jwks_file"]),
            str(values["issuer"]),
            str(values["audience"]),
            tuple(algorithms),
            float(leeway),
        )

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Diagnostic(self.name, line, message))

    def line_of(self, key: str, start: int) -> int:
        """The line of ``key = ...`` in the table that starts at line ``start``."""
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for number in range(start, len(self.lines) + 1):
            text = self.lines[number - 1].strip()
            if number > start and text.startswith("["):
                break
            if pattern.match(text):
                return number
        return start

    def line_of_header(self, header: str) -> int:
        return next((i + 1 for i, ln in enumerate(self.lines) if ln.strip() == header), 1)

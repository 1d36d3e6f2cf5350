"""Find and load suite files into located cases, collecting file:line problems for all of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from verdict.cedar_json import check_entity_shape
from verdict.errors import Diagnostic, PolicyLoadError, RequestError, VerdictError
from verdict.files import FileReadError, read_text
from verdict.model import AuthorizationRequest, EntityUid, JsonObject
from verdict.policy.snapshot import PolicySnapshot, StoreSnapshot
from verdict.policytest.model import Case, Expectation, Suite, describe_error
from verdict.policytest.source import Loc, Source, SourceError, parse_source
from verdict.policytest.verdicts import Expected
from verdict.store.base import StoredEntity
from verdict.store.entity_file import build_entities, read_entities_file

SUITE_SUFFIXES = (".yaml", ".yml", ".json")
ENTITY_FILE_SUFFIX = ".entities.json"
TESTS_DIR = "tests"
# Bounds on one suite file, so that a hostile or broken suite fails to load instead of running
# without end (the YAML alias bound is source.MAX_VALUES).
MAX_SUITE_BYTES = 4 * 1024 * 1024
MAX_CASES = 10_000
# Context and entity values sent to Cedar by all cases of a file together: the suite's context is
# copied into every case, so a large one times many cases is an amplification of its own.
MAX_SENT_VALUES = 1_000_000
EntitySet = Mapping[EntityUid, StoredEntity]


class SuiteLoadError(VerdictError):
    """One or more suites cannot be loaded; carries every located problem."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


class _Problem(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        self.loc = loc
        self.message = message


@dataclass(frozen=True)
class PolicyCase:
    """One loaded case: where it is written, the request it makes and what it expects."""

    suite: str
    name: str
    file: str
    line: int
    entity_set: str  # key of the entities the case is evaluated against
    request: AuthorizationRequest
    expected: Expected

    @property
    def title(self) -> str:
        """``suite / case``, the string ``--filter`` searches."""
        return f"{self.suite} / {self.name}"


@dataclass(frozen=True)
class LoadedSuite:
    """A validated suite file and its cases, in file order."""

    name: str
    file: str
    store_id: str
    cases: tuple[PolicyCase, ...]


@dataclass
class Plan:
    """Everything a run needs: the policies, the suites and the entity sets they use."""

    snapshot: PolicySnapshot
    suites: list[LoadedSuite] = field(default_factory=list)
    # key -> (store id, entities); one in-memory entity store is built per key.
    entity_sets: dict[str, tuple[str, EntitySet]] = field(default_factory=dict)

    @property
    def cases(self) -> list[PolicyCase]:
        """Every case of every suite, in order."""
        return [case for suite in self.suites for case in suite.cases]


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    absolute = path.resolve()
    try:
        return absolute.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return absolute.as_posix()


def discover(paths: Sequence[Path], stores_dir: Path, snapshot: PolicySnapshot) -> list[Path]:
    """Suite files below the given paths, or below every store's ``tests/`` when none is given."""
    if not paths:
        roots = [stores_dir / store_id / TESTS_DIR for store_id in sorted(snapshot.stores)]
        return [f for root in roots if root.is_dir() for f in _suites_below(root)]
    missing = [Diagnostic(str(p), 0, "no such file or folder") for p in paths if not p.exists()]
    if missing:
        raise SuiteLoadError(missing)
    return [f for p in paths for f in (_suites_below(p) if p.is_dir() else [p])]


def _suites_below(root: Path) -> list[Path]:
    # Not only regular files: a FIFO or a broken link named like a suite is reported, not skipped.
    files = (p for p in root.rglob("*") if not p.is_dir() and p.suffix in SUITE_SUFFIXES)
    return sorted(p for p in files if not p.name.endswith(ENTITY_FILE_SUFFIX))


def load_plan(
    files: Sequence[Path],
    snapshot: PolicySnapshot,
    stores_dir: Path,
    default_store: str | None = None,
    *,
    check_expectations: bool = True,
) -> Plan:
    """Load every suite file; raise SuiteLoadError listing the problems of all of them.

    Without ``check_expectations`` the cases' expected policy ids are not checked against the
    store (``verdict diff`` runs new suites against old policies, which may lack them)."""
    plan = Plan(snapshot)
    loader = _SuiteFileLoader(plan, stores_dir.resolve(), default_store, check_expectations)
    diagnostics: list[Diagnostic] = []
    for path in files:
        try:
            plan.suites.append(loader.load(path))
        except SuiteLoadError as exc:
            diagnostics.extend(exc.diagnostics)
    if diagnostics:
        raise SuiteLoadError(diagnostics)
    return plan


class _SuiteFileLoader:
    """Loads suite files one by one, sharing entity sets between suites that use the same data."""

    def __init__(
        self, plan: Plan, stores_dir: Path, default_store: str | None, check_expectations: bool
    ) -> None:
        self._plan = plan
        self._stores_dir = stores_dir
        self._default_store = default_store
        self._check_expectations = check_expectations

    def load(self, path: Path) -> LoadedSuite:
        shown = shown_path(path)
        source, suite = _parse(path, shown)
        _check_sent_values(suite, source, shown)
        try:
            store = self._store(path, suite)
            entity_set = self._entity_set(path, shown, suite, store)
        except _Problem as problem:
            raise SuiteLoadError(
                [Diagnostic(shown, source.line_of(problem.loc), problem.message)]
            ) from None
        cases, problems = [], []
        names: set[str] = set()
        for index, case in enumerate(suite.cases):
            line = source.line_of(("cases", index))
            try:
                if case.name in names:
                    raise _Problem(("name",), f"duplicate case name {case.name!r}")
                names.add(case.name)
                cases.append(
                    _build_case(
                        suite, case, store, entity_set, shown, line, self._check_expectations
                    )
                )
            except _Problem as problem:
                problems.append(_Problem(("cases", index, *problem.loc), problem.message))
        if problems:
            raise SuiteLoadError(
                [Diagnostic(shown, source.line_of(p.loc), p.message) for p in problems]
            )
        return LoadedSuite(suite.name, shown, store.store_id, tuple(cases))

    def _store(self, path: Path, suite: Suite) -> StoreSnapshot:
        stores = self._plan.snapshot.stores
        store_id = suite.store or self._store_of_folder(path) or self._default_store
        if store_id is None and len(stores) == 1:
            store_id = next(iter(stores))
        if store_id is None:
            raise _Problem((), f"several stores {sorted(stores)}: name one with store: or --store")
        if store_id not in stores:
            raise _Problem(("store",), f"store {store_id!r} is not one of {sorted(stores)}")
        return stores[store_id]

    def _store_of_folder(self, path: Path) -> str | None:
        try:
            parts = path.resolve().relative_to(self._stores_dir).parts
        except ValueError:
            return None
        if len(parts) > 2 and parts[1] == TESTS_DIR and parts[0] in self._plan.snapshot.stores:
            return parts[0]
        return None

    def _entity_set(self, path: Path, shown: str, suite: Suite, store: StoreSnapshot) -> str:
        entities = suite.entities
        if entities is None:
            key = f"{store.store_id}:{store.entities_file or '(none)'}"
            if key not in self._plan.entity_sets:
                self._add(key, store, store.entities_file)
            return key
        if isinstance(entities, str):
            file = (path.parent / entities).resolve()
            if not file.exists():
                raise _Problem(("entities",), f"entities file {entities!r} not found")
            key = f"{store.store_id}:{file}"
            if key not in self._plan.entity_sets:
                self._add(key, store, file)
            return key
        key = f"{store.store_id}:{shown}:inline"
        self._plan.entity_sets[key] = (store.store_id, _inline_entities(entities, store))
        return key

    def _add(self, key: str, store: StoreSnapshot, file: Path | None) -> None:
        try:
            # The store's own entities.json is held to its seal, as the server holds it.
            sealed = store.sealed_entities if file == store.entities_file else ""
            loaded = (
                {}
                if file is None
                else read_entities_file(file, store.schema, shown_path(file), sealed=sealed)
            )
        except PolicyLoadError as exc:
            raise _Problem(("entities",), "; ".join(str(d) for d in exc.diagnostics)) from None
        self._plan.entity_sets[key] = (store.store_id, loaded)


def _parse(path: Path, shown: str) -> tuple[Source, Suite]:
    try:
        text = read_text(path, MAX_SUITE_BYTES)
        source = parse_source(text, shown, is_json=path.suffix == ".json")
        _check_case_count(source, shown)
        return source, Suite.model_validate(source.data)
    except FileReadError as exc:
        raise SuiteLoadError([Diagnostic(shown, 0, str(exc))]) from None
    except SourceError as exc:
        raise SuiteLoadError([exc.diagnostic]) from None
    except ValidationError as exc:
        raise SuiteLoadError(
            [
                Diagnostic(shown, source.line_of(tuple(e["loc"])), describe_error(e))
                for e in exc.errors()
            ]
        ) from None


def _check_case_count(source: Source, shown: str) -> None:
    cases = source.data.get("cases") if isinstance(source.data, dict) else None
    if isinstance(cases, list) and len(cases) > MAX_CASES:
        line = source.line_of(("cases",))
        problem = f"{len(cases)} cases; a suite file holds at most {MAX_CASES}"
        raise SourceError(Diagnostic(shown, line, problem))


def _check_sent_values(suite: Suite, source: Source, shown: str) -> None:
    shared = _count_values(suite.context)
    total = 0
    for index, case in enumerate(suite.cases):
        total += shared + _count_values(case.context) + _count_values(case.entities)
        if total > MAX_SENT_VALUES:
            problem = (
                f"the cases up to here send more than {MAX_SENT_VALUES} context and entity "
                "values to Cedar (the suite's context counts once per case)"
            )
            raise SuiteLoadError([Diagnostic(shown, source.line_of(("cases", index)), problem)])


def _count_values(value: Any) -> int:
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _inline_entities(items: list[JsonObject], store: StoreSnapshot) -> EntitySet:
    try:
        return build_entities(items, store.schema)
    except RequestError as exc:
        raise _Problem(("entities",), str(exc)) from None


def _build_case(
    suite: Suite,
    case: Case,
    store: StoreSnapshot,
    entity_set: str,
    shown: str,
    line: int,
    check_expectations: bool = True,
) -> PolicyCase:
    extras = []
    for index, item in enumerate(case.entities):
        try:
            check_entity_shape(item, "entity")
        except RequestError as exc:
            raise _Problem(("entities", index), str(exc)) from None
        extras.append(item)
    request = AuthorizationRequest(
        case.principal,
        case.action,
        case.resource,
        _context(suite, case, store),
        store.store_id,
        tuple(extras),
    )
    expected = (
        _expected(case.expect, store)
        if check_expectations
        else Expected(case.expect.decision, None, frozenset(), case.expect.field)
    )
    return PolicyCase(suite.name, case.name, shown, line, entity_set, request, expected)


def _context(suite: Suite, case: Case, store: StoreSnapshot) -> dict[str, Any]:
    attribute = suite.time_attribute
    if case.now is not None and attribute in case.context:
        raise _Problem(("now",), f"set the time once: now: or context.{attribute}, not both")
    context = dict(suite.context)
    if suite.now is not None:
        context[attribute] = _time_value(suite.now, store)
    for key, value in case.context.items():
        if value is None:
            context.pop(key, None)
        else:
            context[key] = value
    if case.now is not None:
        context[attribute] = _time_value(case.now, store)
    return context


def _time_value(now: str, store: StoreSnapshot) -> Any:
    # With a schema Cedar parses the string by the attribute's type; without one it needs __extn.
    return now if store.schema is not None else {"__extn": {"fn": "datetime", "arg": now}}


def _expected(expect: Expectation, store: StoreSnapshot) -> Expected:
    named = [*(expect.policies or ()), *expect.errors]
    unknown = sorted({p for p in named if p not in store.policies})
    if unknown:
        raise _Problem(("expect",), f"unknown policy ids {unknown} in store {store.store_id!r}")
    policies = None if expect.policies is None else frozenset(expect.policies)
    return Expected(expect.decision, policies, frozenset(expect.errors), expect.field)

"""Parse YAML and JSON suite files into plain data that remembers the line of every item."""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from verdict.errors import Diagnostic

Loc = tuple[str | int, ...]
# Values a YAML document may hold once aliases are expanded: a few aliases can stand for
# billions of values ("billion laughs"), and an alias inside its own anchor for endlessly many.
MAX_VALUES = 1_000_000
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # PyYAML built without libyaml: same results, several times slower
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class SourceError(Exception):
    """A suite file cannot be parsed; carries the located diagnostic."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(str(diagnostic))


@dataclass(frozen=True)
class Source:
    """A parsed document and a function from a location path to its 1-based line."""

    data: Any
    line_of: Callable[[Loc], int]


class _SuiteLoader(_BaseLoader):
    """Safe YAML without timestamp conversion (times stay strings) and with duplicate-key errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep)
        return mapping


# Timestamps stay strings: Cedar reads them by the schema's type; datetime objects are not JSON.
_SuiteLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_source(text: str, shown: str, *, is_json: bool) -> Source:
    """Parse a suite's text; raise SourceError with the file and line of a syntax error."""
    return _parse_json(text, shown) if is_json else _parse_yaml(text, shown)


def _parse_yaml(text: str, shown: str) -> Source:
    loader = _SuiteLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_expansion(root, shown)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise SourceError(Diagnostic(shown, line, f"invalid YAML: {problem}")) from None
    finally:
        loader.dispose()
    return Source(data, lambda loc: _yaml_line(root, loc))


def _check_expansion(root: yaml.Node, shown: str) -> None:
    """Refuse a recursive alias, or aliases that expand to more than MAX_VALUES values."""
    sizes: dict[int, int] = {}  # node id -> values it expands to; shared nodes counted once each
    open_nodes: set[int] = set()  # the nodes on the path being walked
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _yaml_children(node))
            if sizes[key] > MAX_VALUES:
                problem = f"aliases expand this to more than {MAX_VALUES} values"
                raise _expansion_error(shown, node, problem)
        elif key in open_nodes:
            raise _expansion_error(shown, node, "an alias inside its own anchor (recursive)")
        elif key not in sizes:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _yaml_children(node))


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _expansion_error(shown: str, node: yaml.Node, problem: str) -> SourceError:
    line = node.start_mark.line + 1
    return SourceError(Diagnostic(shown, line, f"invalid YAML: {problem}"))


def _yaml_line(root: yaml.Node | None, loc: Loc) -> int:
    node, line = root, 1
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        node = _yaml_child(node, part)
    return node.start_mark.line + 1 if node is not None else line


def _yaml_child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        items: list[yaml.Node] = node.value
        return items[part] if 0 <= part < len(items) else None
    if isinstance(node, yaml.MappingNode):
        # After merging (<<), explicit keys come last and win, so the last match is the one used.
        pairs: list[tuple[yaml.Node, yaml.Node]] = node.value
        matches = [v for k, v in pairs if isinstance(k, yaml.ScalarNode) and k.value == part]
        if matches:
            return matches[-1]
    return None


# A string (with a following ':' when it is an object key) or a structural character.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"(\s*:)?|[{}\[\],]')


def _parse_json(text: str, shown: str) -> Source:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise SourceError(Diagnostic(shown, exc.lineno, f"invalid JSON: {exc.msg}")) from None
    except RecursionError:
        raise SourceError(Diagnostic(shown, 1, "invalid JSON: nested too deeply")) from None
    except _DuplicateKeyError as exc:
        line = _json_key_line(text, exc.key)
        raise SourceError(Diagnostic(shown, line, f"duplicate key {exc.key!r}")) from None
    lines = _json_lines(text)
    return Source(data, lambda loc: _lookup(lines, loc))


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(key)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


def _json_key_line(text: str, key: str) -> int:
    # Best effort: the last occurrence of the key, which is the duplicate in most files.
    position = text.rfind(json.dumps(key))
    return text.count("\n", 0, max(position, 0)) + 1


def _json_lines(text: str) -> dict[Loc, int]:
    """Line of every object key and container in a JSON text, by location path."""
    newlines = [m.start() for m in re.finditer("\n", text)]
    lines: dict[Loc, int] = {(): 1}
    # Each frame: [path of the container, current key or index, is_object].
    stack: list[list[Any]] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in "{[":
            path: Loc = (*stack[-1][0], stack[-1][1]) if stack else ()
            lines.setdefault(path, bisect.bisect(newlines, match.start()) + 1)
            stack.append([path, 0, token == "{"])
        elif token in "}]":
            stack.pop()
        elif token == ",":
            if stack and not stack[-1][2]:
                stack[-1][1] += 1
        elif match.group(1) is not None and stack:
            quoted = token[: token.rindex('"') + 1]
            key = json.loads(quoted) if "\\" in quoted else quoted[1:-1]
            stack[-1][1] = key
            lines[(*stack[-1][0], key)] = bisect.bisect(newlines, match.start()) + 1
    return lines


def _lookup(lines: dict[Loc, int], loc: Loc) -> int:
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return 1

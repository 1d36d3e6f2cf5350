"""Strict JSON parsing of caller text that counts JSON values and refuses more than a limit.

Cost on the event loop grows with the number of values, not bytes: ``[[],[],...]`` in 4 MiB is
1.4 million containers, and ``json.loads`` alone holds the interpreter (and the GIL, even in a
worker thread) for 0.5-1.5 s building them. So a text is parsed by ``json.loads`` only when a
cheap upper bound of its values (one per comma, ``[`` and ``{``, plus one) is within the limit;
otherwise by a scanner written in Python that counts as it goes and stops at the first value
over the limit, so the work done never exceeds the limit (and, being Python, lets other threads
run). Both accept exactly the same texts and place malformed JSON at the same line and column.
Costs: benchmarks/bench_json_values.py.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from verdict.errors import RequestError, ValueBudgetError

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
_LONG_CHARS = len(str(LONG_MIN))  # "-9223372036854775808": no longer text is in range
DEFAULT_MAX_DEPTH = 32
# json.loads runs in C and holds the GIL throughout: at ~250 ns per value in the worst shape
# (small containers, the garbage collector included) this many values cost ~12 ms.
C_PARSE_VALUES = 50_000
_BOUND_CHUNK = 1 << 16  # characters counted at once when bounding values
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# As json's C scanner reads numbers (ASCII digits only; \d would take any Unicode digit).
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_CONTAINERS = (dict, list)
# json's string scanner (C): (text, index after the opening quote, strict) -> (string, end).
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _reject_float(text: str) -> Any:
    raise ValueError("float")


def _reject_constant(name: str) -> Any:
    raise ValueError("constant")


def _parse_long(text: str) -> int:
    if len(text) > _LONG_CHARS:  # out of range by its length; int() of 4,300 digits refuses
        raise ValueError("long")  # (it read as "not valid JSON") and costs quadratic time
    value = int(text)
    if not LONG_MIN <= value <= LONG_MAX:
        raise ValueError("long")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Last-one-wins would let a caller's log (first value) and the decision (last) disagree.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate")
    return obj


FLOAT_PROBLEM = "contains a fractional number; Cedar has no floats (use decimal)"
LONG_PROBLEM = "contains an integer outside Cedar's 64-bit range"
CONSTANT_PROBLEM = "contains NaN or Infinity, which are not JSON"
NUMBER_PROBLEMS = frozenset({FLOAT_PROBLEM, LONG_PROBLEM, CONSTANT_PROBLEM})
_PARSE_PROBLEMS = {
    "float": FLOAT_PROBLEM,
    "long": LONG_PROBLEM,
    "duplicate": "repeats a key within one object",
    "constant": CONSTANT_PROBLEM,
}
_CONSTANTS = ("NaN", "Infinity", "-Infinity")  # what json.loads reads as constants


@dataclass
class ValueBudget:
    """JSON values that several fields (the items of one batch) may hold together; every
    parse given the budget draws on it, refused or not, since the work was done."""

    limit: int
    field: str
    used: int = 0

    def problem(self) -> str:
        return (
            f"hold more than {self.limit} JSON values together in context_json and "
            "entities_json (the server's limit per call); send fewer or smaller items"
        )


@dataclass(frozen=True)
class Parsed:
    """A parsed document, its number of JSON values (containers and scalars; object keys are
    not values), and, for an array, the values of each of its items."""

    value: Any
    values: int
    item_values: tuple[int, ...] = ()


class _TooMany(Exception):
    """The scanner passed its stop; ``item`` is the root array's item at fault, if that."""

    def __init__(self, item: int | None = None) -> None:
        self.item = item


@dataclass(frozen=True)
class _Limits:
    """What one parse may hold, and whom to blame past each bound."""

    field: str
    max_depth: int
    max_values: int | None
    max_item_values: int | None
    budget: ValueBudget | None

    def stop(self) -> int | None:
        """Values after which parsing stops: the field's limit or what the budget has left."""
        if self.budget is None:
            return self.max_values
        left = max(self.budget.limit - self.budget.used, 0)
        return left if self.max_values is None else min(self.max_values, left)

    def refusal(self, item: int | None) -> RequestError:
        if item is not None and self.max_item_values is not None:
            return RequestError(
                f"{self.field}[{item}]",
                f"holds more than {self.max_item_values} JSON values (the server's limit per item)",
            )
        if self.max_values is None or self.stop() != self.max_values:
            assert self.budget is not None
            return ValueBudgetError(self.budget.field, self.budget.problem())
        return RequestError(
            self.field, f"holds more than {self.max_values} JSON values (the server's limit)"
        )


def parse_json(
    text: str,
    field: str,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_values: int | None = None,
    *,
    max_item_values: int | None = None,
    budget: ValueBudget | None = None,
) -> Parsed:
    """Parse caller JSON losslessly (no floats, NaN or duplicate keys; 64-bit integers; at
    most ``max_depth`` levels) holding at most ``max_values`` values, and, if the document is
    an array, at most ``max_item_values`` in each item (refused naming ``field[i]``). With a
    ``budget``, also at most what it has left (refused naming the budget's field).

    Without any limit (trusted files) the text is parsed by json.loads whatever its size;
    with one, only texts it surely parses in a few milliseconds (``C_PARSE_VALUES``).
    """
    limits = _Limits(field, max_depth, max_values, max_item_values, budget)
    stop = limits.stop()
    cap = C_PARSE_VALUES if stop is None else min(stop, C_PARSE_VALUES)
    trusted = stop is None and max_item_values is None
    bound = None if trusted else _value_bound(text, cap)
    if bound is None or bound <= cap:
        parsed = _parse_c(text, limits, bound)
    else:
        parsed = _parse_scanning(text, limits, sys.maxsize if stop is None else stop)
    refusal = _refusal(limits, stop, parsed)
    _charge(budget, parsed.values)
    if refusal is not None:
        raise refusal
    return parsed


def _parse_c(text: str, limits: _Limits, bound: int | None) -> Parsed:
    try:
        value = _loads_c(text, limits.field, limits.max_depth)
        values, items = _count_and_check_depth(value, limits.field, limits.max_depth)
    except RequestError:
        _charge(limits.budget, bound or 0)  # json.loads did at most this much work
        raise
    return Parsed(value, values, items)


def _parse_scanning(text: str, limits: _Limits, stop: int) -> Parsed:
    scanner = _Scanner(text, limits, stop)
    try:
        value = scanner.parse()
    except _TooMany as exc:
        refusal = limits.refusal(exc.item)  # before the charge: it reads what was left
        _charge(limits.budget, scanner.count)
        raise refusal from None
    except RequestError:
        _charge(limits.budget, scanner.count)
        raise
    return Parsed(value, scanner.count, tuple(scanner.items))


def _refusal(limits: _Limits, stop: int | None, parsed: Parsed) -> RequestError | None:
    """The json.loads path counts after parsing: its bound keeps the values within ``stop``
    (checked again all the same), but the items of an array still need their own check."""
    if stop is not None and parsed.values > stop:
        return limits.refusal(None)
    if limits.max_item_values is not None:
        for index, count in enumerate(parsed.item_values):
            if count > limits.max_item_values:
                return limits.refusal(index)
    return None


def _charge(budget: ValueBudget | None, values: int) -> None:
    if budget is not None:
        budget.used += values


def _value_bound(text: str, cap: int) -> int:
    """An upper bound of the values in ``text`` (or of what json.loads scans before it finds
    an error), counted until it passes ``cap``: after the first, each value follows a comma or
    opens its container's members (``[`` or ``{``). Characters inside strings count too, so
    the bound errs only towards the scanner, never the other way."""
    bound = 1
    for start in range(0, len(text), _BOUND_CHUNK):
        part = text[start : start + _BOUND_CHUNK]
        bound += part.count(",") + part.count("[") + part.count("{")
        if bound > cap:
            break
    return bound


# Built once: json.loads with hooks builds a decoder on every call. (json.loads also refuses a
# leading BOM; decode() fails there too, at the same position 0.)
_DECODER = json.JSONDecoder(
    parse_float=_reject_float,
    parse_constant=_reject_constant,
    parse_int=_parse_long,
    object_pairs_hook=_unique_keys,
)


def _loads_c(text: str, field: str, max_depth: int) -> Any:
    try:
        return _DECODER.decode(text)
    except (RecursionError, ValueError) as exc:
        raise _decode_refusal(text, field, max_depth, exc) from None


def _decode_refusal(text: str, field: str, max_depth: int, exc: Exception) -> RequestError:
    """What the decoder's exception says, for the caller: depth, position or the hook's word."""
    if isinstance(exc, RecursionError):
        return RequestError(field, _depth_problem(max_depth))
    if isinstance(exc, json.JSONDecodeError):
        return RequestError(field, _invalid_at(text, exc.pos))
    return RequestError(field, _PARSE_PROBLEMS.get(str(exc), "is not valid JSON"))


def array_items(
    text: str, field: str, max_depth: int = DEFAULT_MAX_DEPTH, stop: int | None = None
) -> ArrayItems | None:
    """The items of a trusted JSON array document (no value limits), parsed one at a time as
    ``parse_json`` parses the whole (the same decoder and depth check, the same refusals at the
    same line and column), so a large file's items can be handed on while the rest is parsed;
    None when the document does not open with ``[`` (parse it whole to say what it is).
    ``stop``: end before the item starting there (see ``ArrayItems``)."""
    start = _WHITESPACE.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("[", start):
        return None
    return ArrayItems(text, start + 1, field, max_depth, stop)


class ArrayItems:
    """An array's items from ``index`` (just past the ``[``, or where an item starts) to the
    end of the document, or, given ``stop``, to the item that starts there: ``aligned`` then
    says whether one does (False: ``stop`` fell inside an item, or the array ended before it).
    Given ``pause``, they end at the first item that starts at or past it (``paused_at``: its
    offset, None if the array ended first), to be read on from there."""

    def __init__(
        self,
        text: str,
        index: int,
        field: str,
        max_depth: int,
        stop: int | None = None,
        pause: int | None = None,
    ) -> None:
        self.aligned: bool | None = None
        self.paused_at: int | None = None
        self._items = self._read(text, index, field, max_depth, stop, pause)

    def __iter__(self) -> Iterator[Any]:
        return self._items

    def _read(
        self,
        text: str,
        index: int,
        field: str,
        max_depth: int,
        stop: int | None,
        pause: int | None,
    ) -> Iterator[Any]:
        index = _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
        if text.startswith("]", index):
            index += 1
        else:
            while True:
                if stop is not None and index >= stop:
                    self.aligned = index == stop
                    return
                if pause is not None and index >= pause:
                    self.paused_at = index
                    return
                start = index
                try:
                    item, index = _DECODER.raw_decode(text, index)
                except (RecursionError, ValueError) as exc:
                    raise _decode_refusal(text, field, max_depth, exc) from None
                # Each nested level opens with a bracket of its own: fewer brackets in the
                # item's text (strings included, so never too few) than levels allowed need no
                # walk.
                if text.count("[", start, index) + text.count("{", start, index) >= max_depth:
                    check_item_depth(item, field, max_depth)
                yield item
                index = _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
                if text.startswith(",", index):
                    index = _WHITESPACE.match(text, index + 1).end()  # type: ignore[union-attr]
                elif text.startswith("]", index):
                    index += 1
                    break
                else:
                    raise RequestError(field, _invalid_at(text, index))
        if stop is not None:
            self.aligned = False
            return
        index = _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
        if index != len(text):
            raise RequestError(field, _invalid_at(text, index))


def check_item_depth(item: Any, field: str, max_depth: int) -> None:
    """RequestError unless an array's ``item`` nests within ``max_depth`` levels, the array
    counted (as ``parse_json`` counts the whole)."""
    _count_levels([item], field, max_depth, 1)


# Where an entity object probably starts: after "}," and before one of an entity's keys. Only
# a guess (a record inside an attribute may look the same): ArrayItems' ``stop`` proves it.
_ITEM_START = re.compile(
    r'\}[ \t\n\r]*,[ \t\n\r]*(\{)[ \t\n\r]*"(?:uid|attrs|parents|tags)"[ \t\n\r]*:'
)


def guess_item_start(text: str, near: int) -> int | None:
    """An offset at or after ``near`` where an item of an entity array seems to start."""
    found = _ITEM_START.search(text, near)
    return found.start(1) if found is not None else None


def _invalid_at(text: str, index: int) -> str:
    """``is not valid JSON at line L column C`` (counted as json.JSONDecodeError counts)."""
    line = text.count("\n", 0, index) + 1
    column = index - text.rfind("\n", 0, index)
    return f"is not valid JSON at line {line} column {column}"


class _Invalid(ValueError):
    """The scanner found text that is not JSON at ``index``."""

    def __init__(self, index: int) -> None:
        super().__init__("invalid")
        self.index = index


def _depth_problem(max_depth: int) -> str:
    return f"is nested deeper than {max_depth} levels"


def _count_and_check_depth(value: Any, field: str, max_depth: int) -> tuple[int, tuple[int, ...]]:
    """Values of a parsed document (and of each item of an array) with its depth checked:
    containers only, level by level, no recursion (a hostile document must not exhaust the
    interpreter stack) and no visit to each scalar beyond one type check."""
    if not isinstance(value, list):
        return _count_levels([value], field, max_depth, 0), ()
    items = tuple(_count_levels([item], field, max_depth, 1) for item in value)
    return 1 + sum(items), items


def _count_levels(level: list[Any], field: str, max_depth: int, depth: int) -> int:
    count = len(level)
    level = [item for item in level if isinstance(item, _CONTAINERS)]
    while level:
        depth += 1
        if depth > max_depth:
            raise RequestError(field, _depth_problem(max_depth))
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            count += len(children)
            below += [child for child in children if isinstance(child, _CONTAINERS)]
        level = below
    return count


class _Scanner:
    """json.loads with the hooks above, in Python: counts each value as it starts and stops
    at the first one past ``stop`` (or past the item limit within one item of a root array)."""

    def __init__(self, text: str, limits: _Limits, stop: int) -> None:
        self.text = text
        self.field = limits.field
        self.max_depth = limits.max_depth
        self.item_limit = limits.max_item_values
        self.limit = stop
        self.stop = stop  # lowered to the end of the current item while in a root array
        self.count = 0
        self.deepest = 1
        self.items: list[int] = []

    def parse(self) -> Any:
        text = self.text
        try:
            start = _skip(text, 0)
            if text.startswith("[", start):
                value, end = self._root_array(start + 1)
            else:
                value, end = self._value(start, 1)
        except RecursionError:
            raise RequestError(self.field, _depth_problem(self.max_depth)) from None
        except IndexError:  # read past the end: the text stops inside a value
            raise RequestError(self.field, _invalid_at(text, len(text))) from None
        except json.JSONDecodeError as exc:  # from json's own string scanner
            raise RequestError(self.field, _invalid_at(text, exc.pos)) from None
        except _Invalid as exc:
            raise RequestError(self.field, _invalid_at(text, exc.index)) from None
        except ValueError as exc:
            problem = _PARSE_PROBLEMS.get(str(exc), "is not valid JSON")
            raise RequestError(self.field, problem) from None
        if end < len(text) and (extra := _skip(text, end)) != len(text):
            raise RequestError(self.field, _invalid_at(text, extra))
        if self.deepest > self.max_depth:
            raise RequestError(self.field, _depth_problem(self.max_depth))
        return value

    def _value(self, index: int, depth: int) -> tuple[Any, int]:
        self.count += 1
        if self.count > self.stop:
            raise _TooMany(len(self.items) if self.stop < self.limit else None)
        text = self.text
        char = text[index]
        if char == '"':
            return _scanstring(text, index + 1, True)
        if char == "[" or char == "{":
            # Judged after the whole text, as json.loads is: a text both too deep and broken
            # is "not valid JSON" on either path. Python's recursion limit stops the rest.
            self.deepest = max(self.deepest, depth)
            if char == "[":
                return self._array(index + 1, depth)
            return self._object(index + 1, depth)
        if char in _LITERALS:
            word, literal = _LITERALS[char]
            if text.startswith(word, index):
                return literal, index + len(word)
        number = _NUMBER.match(text, index)
        if number is None:
            if text.startswith(_CONSTANTS, index):
                raise ValueError("constant")
            raise _Invalid(index)
        integer, fraction, exponent = number.groups()
        if fraction or exponent:
            raise ValueError("float")
        return _parse_long(integer), number.end()

    def _array(self, index: int, depth: int) -> tuple[list[Any], int]:
        text = self.text
        items: list[Any] = []
        index = _skip(text, index)
        if text[index] == "]":
            return items, index + 1
        while True:
            item, index = self._value(index, depth + 1)
            items.append(item)
            index = _after_item(text, index, "]")
            if index < 0:
                return items, -index
            index = _skip(text, index)

    def _root_array(self, index: int) -> tuple[list[Any], int]:
        """The root array, each item's values counted (and bounded by the item limit)."""
        text = self.text
        items: list[Any] = []
        self.count += 1
        if self.count > self.stop:
            raise _TooMany()
        index = _skip(text, index)
        if text[index] == "]":
            return items, index + 1
        while True:
            before = self.count
            if self.item_limit is not None:
                self.stop = min(self.limit, before + self.item_limit)
            item, index = self._value(index, 2)
            self.items.append(self.count - before)
            items.append(item)
            index = _after_item(text, index, "]")
            if index < 0:
                return items, -index
            index = _skip(text, index)

    def _object(self, index: int, depth: int) -> tuple[dict[str, Any], int]:
        text = self.text
        pairs: list[tuple[str, Any]] = []
        index = _skip(text, index)
        if text[index] == "}":
            return {}, index + 1
        while True:
            if text[index] != '"':
                raise _Invalid(index)
            key, index = _scanstring(text, index + 1, True)
            index = _skip(text, index)
            if text[index] != ":":
                raise _Invalid(index)
            value, index = self._value(_skip(text, index + 1), depth + 1)
            pairs.append((key, value))
            index = _after_item(text, index, "}")
            if index < 0:
                return _unique_keys(pairs), -index
            index = _skip(text, index)


def _skip(text: str, index: int) -> int:
    """The index of the first non-whitespace character from ``index``; the regex runs only
    when there is whitespace (compact JSON, the common case, costs one comparison)."""
    if text[index] in _SPACE:
        return _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
    return index


def _after_item(text: str, index: int, close: str) -> int:
    """After a container's item: the index past its comma, or minus the index past ``close``
    (never 0: the container's opening character came before)."""
    index = _skip(text, index)
    char = text[index]
    if char == ",":
        return index + 1
    if char == close:
        return -(index + 1)
    raise _Invalid(index)


_SPACE = frozenset(" \t\n\r")
_LITERALS: dict[str, tuple[str, Any]] = {
    "t": ("true", True),
    "f": ("false", False),
    "n": ("null", None),
}

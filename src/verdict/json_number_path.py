"""Where the first number Cedar cannot hold sits in a small JSON text: for errors that name it.

The strict parse (json_values) refuses a float, an integer past 64 bits or NaN where it meets
it, without saying where: its hooks see only the number's text. A request's context is small
(``max_context_values``), so on that error path it is read again here, permissively, and walked
in document order: the first such number is the one the strict parse refused (numbers are
judged as they are read, and a repeated key only when its object closes, after its numbers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from verdict.json_values import LONG_MAX, LONG_MIN

_LONG_DIGITS = 19  # digits of 2**63
# A path is named only within these: deeper than the context's depth limit, or longer than a
# line, the plain refusal is clearer, and a status message stays small (grpc clients refuse
# trailers past 8-16 KiB: a long path would lose the INVALID_ARGUMENT itself; attack round 27).
MAX_PATH_PARTS = 32
MAX_PATH_CHARS = 200


class _GiveUp(Exception):
    """The first refused number lies past MAX_PATH_PARTS: no path is named."""


class _Refused:
    """A number the strict parse refuses, kept in place of its value."""


class _Members(list[tuple[str, Any]]):
    """An object's members in order, repeats kept (a dict would drop one)."""


def _long_or_refused(text: str) -> int | _Refused:
    # Past 19 digits an integer is out of range whatever it says: never converted (int() of
    # thousands of digits costs quadratic time, for numbers the strict parse never reached).
    if len(text) - text.startswith("-") > _LONG_DIGITS:
        return _Refused()
    value = int(text)
    return value if LONG_MIN <= value <= LONG_MAX else _Refused()


_PERMISSIVE = json.JSONDecoder(
    parse_float=lambda _text: _Refused(),
    parse_int=_long_or_refused,
    parse_constant=lambda _text: _Refused(),
    object_pairs_hook=_Members,
)


def refused_number_path(text: str, child: Callable[[str, str], str]) -> str | None:
    """The attribute path of the first number in ``text``, a JSON object, that the strict
    parse refuses (``child(path, key)`` names a member, ``[i]`` a list item), or None if there
    is none, the text is no JSON object, or the path would pass MAX_PATH_PARTS or
    MAX_PATH_CHARS. Only for texts small enough to parse twice."""
    try:
        document = _PERMISSIVE.decode(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, _Members):
        return None
    try:
        steps = _first_refused(document, 0)
    except _GiveUp:
        return None
    if steps is None:
        return None
    path = ""
    for step in reversed(steps):  # gathered leaf first
        path = child(path, step) if isinstance(step, str) else f"{path}[{step}]"
        if len(path) > MAX_PATH_CHARS:
            return None
    return path.removeprefix(".")


def _first_refused(value: Any, depth: int) -> list[str | int] | None:
    """The steps (leaf first) to the first refused number in document order, or None."""
    if isinstance(value, _Refused):
        return []
    if isinstance(value, _Members):
        steps: Iterable[tuple[str | int, Any]] = value
    elif isinstance(value, list):
        steps = enumerate(value)
    else:
        return None
    if depth == MAX_PATH_PARTS:
        # Anything further down would be a longer path than is named: the first refused
        # number may be down there, so stop rather than name a later, shallower one.
        if any(isinstance(item, (_Refused, list)) for _, item in steps):
            raise _GiveUp
        return None
    for step, item in steps:
        found = _first_refused(item, depth + 1)
        if found is not None:
            found.append(step)
            return found
    return None


def refused_number_item(text: str) -> int | None:
    """The index of the item of ``text``, a JSON array (an entities file), holding the first
    number the strict parse refuses; None if there is none or the text is no JSON array."""
    try:
        document = _PERMISSIVE.decode(text)
        if type(document) is not list:  # a _Members is an object
            return None
        for index, item in enumerate(document):
            if _holds_refused(item):
                return index
    except (ValueError, RecursionError):
        return None
    return None


def _holds_refused(value: Any) -> bool:
    if isinstance(value, _Refused):
        return True
    if isinstance(value, _Members):
        return any(_holds_refused(item) for _, item in value)
    if isinstance(value, list):
        return any(_holds_refused(item) for item in value)
    return False

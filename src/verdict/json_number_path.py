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


class _Refused:
    """A number the strict parse refuses, kept in place of its value."""


class _Members(list[tuple[str, Any]]):
    """An object's members in order, repeats kept (a dict would drop one)."""


def _long_or_refused(text: str) -> int | _Refused:
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
    is none or the text is no JSON object. Only for texts small enough to parse twice."""
    try:
        document = _PERMISSIVE.decode(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, _Members):
        return None
    found = _first_refused(document, "", child)
    return found.removeprefix(".") if found else None


def _first_refused(value: Any, path: str, child: Callable[[str, str], str]) -> str | None:
    if isinstance(value, _Refused):
        return path
    if isinstance(value, _Members):
        steps: Iterable[tuple[str, Any]] = ((child(path, key), item) for key, item in value)
    elif isinstance(value, list):
        steps = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for here, item in steps:
        found = _first_refused(item, here, child)
        if found is not None:
            return found
    return None

"""Lines for errors in an entities file: Cedar and our parser name an index or a uid, not a line."""

from __future__ import annotations

import json
import re
from typing import Any

from verdict.errors import RequestError
from verdict.json_number_path import refused_number_item
from verdict.json_values import NUMBER_PROBLEMS

_INDEX = re.compile(r"^entities\[(\d+)\]")
_UID = re.compile(r'`([A-Za-z_][\w:]*::"(?:[^"\\]|\\.)*")`')


def _any_int(text: str) -> int:
    # int() refuses 4,300 digits and more with a ValueError (a traceback here before): the
    # value does not matter for placing an error, only that the text reads.
    return int(text) if len(text) <= _INT_DIGITS else 0


_INT_DIGITS = 4000
# json.loads but for integers: floats, NaN and repeated keys read as json.loads reads them.
_PLACING = json.JSONDecoder(parse_int=_any_int)


def error_line(text: str, error: RequestError) -> int:
    """The line an entities-file error points at: JSON syntax errors by the decoder's line,
    ``entities[i]`` by where item ``i`` starts, a uid Cedar names by where that entity
    starts, a refused number by where the item holding it starts; 1 when nothing more
    precise is known."""
    document: object = None
    try:
        document = _PLACING.decode(text)
    except json.JSONDecodeError as exc:
        return exc.lineno
    except RecursionError:  # nested past the interpreter's limit: placed by its index alone
        pass  # (a traceback instead of the refusal before; attack round 26)
    starts = item_lines(text)
    if error.field == "entities" and error.problem in NUMBER_PROBLEMS:
        index = refused_number_item(text)  # the strict parse names no item for these
    else:
        index = _item_index(error, document)
    if index is not None and index < len(starts):
        return starts[index]
    return 1


def _item_index(error: RequestError, document: object) -> int | None:
    found = _INDEX.match(error.field)
    if found:
        return int(found.group(1))
    return entity_index(str(error), document)


def entity_index(message: str, document: object) -> int | None:
    """The position in ``document`` of the first entity of it a Cedar message names
    (`` `Type::"id"` ``; a message may name a parent or a reference first)."""
    if not isinstance(document, list):
        return None
    positions: dict[tuple[Any, Any], int] = {}
    for position, item in enumerate(document):
        uid = item.get("uid") if isinstance(item, dict) else None
        if isinstance(uid, dict):
            uid = uid.get("__entity", uid)
        if isinstance(uid, dict):
            positions.setdefault((uid.get("type"), uid.get("id")), position)
    for named in _UID.finditer(message):
        type_, _, rest = named.group(1).partition('::"')  # a type name holds no quote
        try:
            id_ = json.loads('"' + rest)
        except json.JSONDecodeError:
            continue
        if (type_, id_) in positions:
            return positions[(type_, id_)]
    return None


def item_lines(text: str) -> list[int]:
    """The line on which each element of the top-level JSON array starts."""
    starts: list[int] = []
    depth, line, in_string, escaped, expect_item = 0, 1, False, False, False
    for char in text:
        if char == "\n":
            line += 1
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char.isspace():
            continue
        if depth == 1 and expect_item and char not in ",]":
            starts.append(line)
            expect_item = False
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth == 1:
                expect_item = True
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 1:
            expect_item = True
    return starts

"""Parse uids written as strings (CLI, clients, test files): ``Type::"id"`` or ``Type::id``."""

from __future__ import annotations

from verdict.errors import RequestError
from verdict.model import TYPE_NAME_PROBLEM, EntityUid, has_surrogate, is_type_name

USAGE = 'must be written TYPE::"ID" or TYPE::ID (for example Employee::"olivia" or Loan::loan-1)'
_SIMPLE = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r", "0": "\0", "'": "'"}


def parse_uid_arg(text: str, field: str) -> EntityUid:
    """Read one uid string.

    ``Type::"id"`` is Cedar's own form: the id is a Cedar string literal with its escapes
    (``\\" \\\\ \\n \\t \\r \\0 \\' \\xHH \\u{H..}``), so any id, the empty one and ids holding
    ``::`` included, can be written. ``Type::id`` splits at the last ``::`` and takes the id
    verbatim (no quotes, no escapes).
    """
    if has_surrogate(text):
        raise RequestError(field, "contains a lone surrogate, which is not Unicode text")
    quote = text.find('"')
    if quote >= 2 and text[quote - 2 : quote] == "::" and len(text) > quote + 1:
        if not text.endswith('"'):
            raise RequestError(field, 'starts a quoted id but does not end with "')
        type_, id_ = text[: quote - 2], unescape(text[quote + 1 : -1], field)
    else:
        type_, sep, id_ = text.rpartition("::")
        if not sep or not id_:
            raise RequestError(field, USAGE)
    if not is_type_name(type_):
        raise RequestError(field, f"type {TYPE_NAME_PROBLEM}")
    return EntityUid(type_, id_)


def unescape(body: str, field: str) -> str:
    """The value of a Cedar string literal's body (between the quotes)."""
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == '"':
            raise RequestError(field, 'has an unescaped " inside the quoted id')
        if char != "\\":
            out.append(char)
            index += 1
            continue
        value, index = _escape(body, index + 1, field)
        out.append(value)
    return "".join(out)


def _escape(body: str, index: int, field: str) -> tuple[str, int]:
    """Decode the escape whose letter is at ``index``; return its value and the next index."""
    letter = body[index : index + 1]
    if letter in _SIMPLE:
        return _SIMPLE[letter], index + 1
    if letter == "x":
        digits = body[index + 1 : index + 3]
        if len(digits) == 2 and _is_hex(digits) and int(digits, 16) <= 0x7F:
            return chr(int(digits, 16)), index + 3
    if letter == "u" and body[index + 1 : index + 2] == "{":
        end = body.find("}", index + 2)
        digits = body[index + 2 : end] if end > 0 else ""
        if 1 <= len(digits) <= 6 and _is_hex(digits):
            point = int(digits, 16)
            if point <= 0x10FFFF and not 0xD800 <= point <= 0xDFFF:
                return chr(point), end + 1
    raise RequestError(field, "has an invalid escape in the quoted id")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)

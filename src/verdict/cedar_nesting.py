"""Bound the nesting of Cedar text (policies, Cedar-syntax schemas) before cedarpy parses it.

cedarpy's parser recurses once per nested level and crashes the process (SIGSEGV, on the
default 8 MiB stack) instead of refusing deep input: ~1,000 nested brackets in a policy
(parentheses, sets, records, calls), ~10,000 chained ``if``s (nested, or an ``else if``
ladder), ~3,000 nested record types in a schema. One such file in a store folder ended
`verdict serve` at its start or at the reload that read it, and `verdict validate` too. So the
text is scanned first (outside strings and comments) and refused well below those depths,
which no real policy comes near; the parse then runs on any thread's stack.
"""

from __future__ import annotations

import re

MAX_BRACKET_DEPTH = 100
MAX_IFS_PER_STATEMENT = 500
# Binary operators and accesses chain without brackets (``1 + 1 + ...``, ``.a.a``): ~16,400 in
# one policy crashed the parse (attack round 18); Cedar's JSON form of policies, which Verdict
# loads them through, holds no more than ~60 chained anyway.
MAX_OPERATORS_PER_STATEMENT = 2_000

# Strings (to their closing quote, or the end of an unterminated one) and comments are matched
# whole so that nothing inside them counts; of the rest only brackets, ``;`` and ``if`` matter.
_TOKENS = re.compile(
    r'"(?:[^"\\]|\\.)*"?|//[^\r\n]*|[()\[\]{};]|\bif\b'
    r"|&&|\|\||[=!<>]=|[<>+*.-]|\b(?:has|like|in|is)\b",
    re.DOTALL,
)
_OPEN = frozenset("([{")
_STRING_OR_COMMENT = frozenset('"/')
_ANGLES = {"<": "(", ">": ")"}
_CLOSE = frozenset(")]}")


def nesting_problem(text: str, *, count_operators: bool = False) -> str | None:
    """Why ``text`` is nested too deeply for Cedar to parse safely, or None; policy text also
    counts its operators (``count_operators``), schema text its ``Set<`` as brackets. Only a
    prefix of the text that reaches a bound fails, so a search over prefixes finds the line."""
    if _surely_shallow(text, count_operators):
        return None
    depth = ifs = operators = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token[0] in _STRING_OR_COMMENT:
            continue
        if not count_operators and token in _ANGLES:  # a schema's Set<...> nests like brackets
            token = _ANGLES[token]
        if token in _OPEN:
            depth += 1
            if depth > MAX_BRACKET_DEPTH:
                return f"brackets nested deeper than {MAX_BRACKET_DEPTH} levels"
        elif token in _CLOSE:
            depth = max(0, depth - 1)
        elif token == "if":
            ifs += 1
            if ifs > MAX_IFS_PER_STATEMENT:
                return f"more than {MAX_IFS_PER_STATEMENT} `if` expressions in one statement"
        elif token == ";":
            if depth == 0:
                ifs = operators = 0
        elif count_operators:
            operators += 1
            if operators > MAX_OPERATORS_PER_STATEMENT:
                limit = MAX_OPERATORS_PER_STATEMENT
                return f"more than {limit:,} operators in one statement"
    return None


def _surely_shallow(text: str, count_operators: bool) -> bool:
    """A count of every opening bracket and every ``if`` (comments and strings included) within
    the bounds, and a text too short to hold more operators: the common small file, told apart
    without the scan."""
    opened = text.count("(") + text.count("[") + text.count("{")
    if not count_operators:
        opened += text.count("<")
    if opened > MAX_BRACKET_DEPTH or text.count("if") > MAX_IFS_PER_STATEMENT:
        return False
    return not count_operators or len(text) <= MAX_OPERATORS_PER_STATEMENT

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

# Strings (to their closing quote, or the end of an unterminated one) and comments are matched
# whole so that nothing inside them counts; of the rest only brackets, ``;`` and ``if`` matter.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|//[^\n]*|[()\[\]{};]|\bif\b', re.DOTALL)
_OPEN = frozenset("([{")
_CLOSE = frozenset(")]}")


def nesting_problem(text: str) -> str | None:
    """Why ``text`` is nested too deeply for Cedar to parse safely, or None. Only a prefix of
    the text that reaches the depth fails, so a search over prefixes finds the line."""
    if _surely_shallow(text):
        return None
    depth = ifs = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
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
        elif token == ";" and depth == 0:
            ifs = 0
    return None


def _surely_shallow(text: str) -> bool:
    """A count of every opening bracket and every ``if`` (comments and strings included) within
    the bounds: the common small file, told apart without the scan."""
    opened = text.count("(") + text.count("[") + text.count("{")
    return opened <= MAX_BRACKET_DEPTH and text.count("if") <= MAX_IFS_PER_STATEMENT

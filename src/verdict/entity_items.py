"""An entity file's items read by json's C decoder without hooks, a chunk at a time, each
chunk proven to read as the strict parse reads it, else read by the strict parse: its items
and its refusals, faster.

The strict parse (``json_values.ArrayItems``) is the same decoder with hooks that call back
into Python for every object and integer, to refuse duplicate keys, floats, NaN and integers
past 64 bits: ~7 µs of a lending entity, against ~4.7 µs without them. Without the hooks the
decoder keeps the last of two equal keys and reads those numbers. So:

- **Duplicate keys**: a chunk without ``\\u`` escapes holds a ``:`` outside its strings for
  each member and, inside them, only the ``:`` written as such; the items' stored forms
  (``entity_text``, which an entity needs anyway) hold one per member kept and those inside
  the strings kept. Equal counts mean no member was dropped. A chunk with ``\\u`` (which can
  spell a ``:``) is read strictly.
- **Numbers**: floats (NaN and Infinity among them) and integers past 64 bits are refused by
  the walk every item gets (``cedar_json.check_entity_item``); the item is then read strictly,
  which gives the strict parse's own refusal of it.
- **Depth**: an item whose stored form holds ``max_depth`` brackets or more is walked for its
  depth; too deep, it is read strictly. A chunk nested past the interpreter's limit is read
  strictly.
- **Anything else the decoder refuses** (invalid JSON): the chunk is read strictly.
- **Chunk ends** are guesses (``guess_item_start``); a chunk the decoder reads whole ends
  where an item ends, since a guess inside an item or a string leaves it unbalanced.

Not orjson, though it reads twice as fast: it caches object keys of up to 64 bytes by their
64-bit hash alone, and a key crafted to collide with ``"parents"`` was read as ``"parents"``
(attack round 26). json's decoder compares keys by their text.

Whatever is read strictly gives what the strict parse gives, refusal and position included.
``tests/security/test_entity_items.py`` holds the two to one answer on generated files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from verdict.errors import RequestError
from verdict.json_values import ArrayItems, check_item_depth, guess_item_start
from verdict.store.weight import entity_text

CHUNK_CHARS = 256 * 1024  # ~1,000 lending entities: one decoder call each
_DECODER = json.JSONDecoder()  # no hooks: the strict parse's, in C throughout
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def entity_items(
    text: str, field: str, max_depth: int, stop: int | None = None
) -> EntityItems | None:
    """``array_items`` for an entities document, read as ``EntityItems``; None when the
    document does not open with ``[`` (parse it whole to say what it is)."""
    index = _WHITESPACE.match(text).end()  # type: ignore[union-attr]
    if not text.startswith("[", index):
        return None
    return EntityItems(text, index + 1, field, max_depth, stop)


class EntityItems:
    """The items of an entities array from ``index`` (just past its ``[``), as
    ``ArrayItems(text, index, field, max_depth, stop)`` yields them, with ``aligned`` as
    there. ``last_text``: the stored form of the item just yielded, when it was made.
    ``reached``: where in ``text`` the chunk being read starts (for progress: a lower bound,
    moved once a chunk, not per item).

    The reader of the items walks each with ``check_entity``; when that refuses one, it asks
    ``strict_again`` for the strict parse's reading of it, which raises the strict parse's
    refusal (a float, an integer past 64 bits) where it has one."""

    def __init__(
        self, text: str, index: int, field: str, max_depth: int, stop: int | None = None
    ) -> None:
        self.aligned: bool | None = None
        self.last_text: str | None = None
        self.reached = index
        self._text = text
        self._field = field
        self._max_depth = max_depth
        self._stop = stop
        self._last: tuple[int, int] | None = None  # (chunk start, position) of a fast item
        self._paused_at: int | None = None  # where the last strict stretch paused
        self._diverged = False  # an item the strict parse read otherwise: strict from here
        self._items = self._read(index)

    def __iter__(self) -> Iterator[Any]:
        return self._items

    def strict_again(self) -> Any | None:
        """The item just yielded as the strict parse reads it (its refusal raised, if it
        has one), or None when it was read strictly already. Should the strict parse accept
        it (the two readings disagree), the rest is read strictly: the answer stays the
        strict parse's, and a file cannot make every item read twice."""
        if self._last is None:
            return None
        item = self._strict_item(*self._last)
        self._diverged = True
        return item

    def _read(self, index: int) -> Iterator[Any]:
        text = self._text
        index = _WHITESPACE.match(text, index).end()  # type: ignore[union-attr]
        while True:
            self.reached = index
            start = guess_item_start(text, index + CHUNK_CHARS)
            if start is None or (self._stop is not None and start > self._stop):
                yield from self._strict(index, pause=None)  # the rest: one chunk or less
                return
            end = text.rindex("}", index, start) + 1  # the guess: "}" "," "{" with spaces
            chunk = text[index:end]
            fast = _fast_chunk(chunk)
            if fast is None:
                yield from self._strict(index, pause=start)
                if self._paused_at is None:
                    return
                index = self._paused_at
                continue
            items, texts = fast
            for position, item in enumerate(items):
                stored = texts[position]
                if stored.count("{") + stored.count("[") >= self._max_depth and not _within(
                    item, self._max_depth
                ):  # too deep: the strict parse's refusal (or what it finds first)
                    self._last, self.last_text = None, None
                    item = self._strict_item(index, position)
                    self._diverged = True  # it did not refuse: trust it from here on
                else:
                    self._last, self.last_text = (index, position), stored
                yield item
                if self._diverged:
                    yield from self._strict_after(index, position + 1)
                    return
            index = start
            if index == self._stop:
                self.aligned = True
                return

    def _strict(self, index: int, pause: int | None) -> Iterator[Any]:
        """The strict parse from ``index`` on, to ``pause`` (``_paused_at``: where it paused,
        None when it ended) or to the end (``aligned`` then as ``ArrayItems`` says)."""
        self._last, self.last_text = None, None
        items = ArrayItems(self._text, index, self._field, self._max_depth, self._stop, pause)
        yield from items
        self._paused_at = items.paused_at
        if items.paused_at is None:
            self.aligned = items.aligned

    def _strict_after(self, chunk_start: int, skipped: int) -> Iterator[Any]:
        """The strict parse of the items after the first ``skipped`` of the chunk at
        ``chunk_start``, to the end (``aligned`` as ``ArrayItems`` says)."""
        self._last, self.last_text = None, None
        items, rest = self._strict_skipping(chunk_start, skipped)
        yield from rest
        self.aligned = items.aligned

    def _strict_item(self, chunk_start: int, position: int) -> Any:
        """Item ``position`` of the chunk at ``chunk_start`` as the strict parse reads it
        (parsing the items before it again: only for an item the fast reading refused)."""
        return next(self._strict_skipping(chunk_start, position)[1])

    def _strict_skipping(self, chunk_start: int, skipped: int) -> tuple[ArrayItems, Iterator[Any]]:
        """The strict parse from the chunk at ``chunk_start``, its first ``skipped`` items
        parsed and passed over: (the parse, its remaining items)."""
        items = ArrayItems(self._text, chunk_start, self._field, self._max_depth, self._stop)
        rest = iter(items)
        for _ in range(skipped):
            next(rest)
        return items, rest


def _fast_chunk(chunk: str) -> tuple[list[Any], list[str]] | None:
    """The items of ``chunk`` (whole items and the commas between them) and their stored
    forms, read without the strict parse's hooks; None unless that is surely what the strict
    parse reads (see the module's docstring), numbers and depth aside."""
    if "\\u" in chunk:
        return None
    try:
        items = _DECODER.decode("[" + chunk + "]")
        texts = [entity_text(item) for item in items]
    except (ValueError, RecursionError):  # invalid, or nested past the interpreter's limit
        return None
    if sum(stored.count(":") for stored in texts) != chunk.count(":"):
        return None  # a duplicate key (or more): the strict parse names it
    return items, texts


def _within(item: Any, max_depth: int) -> bool:
    """Whether ``item`` nests within ``max_depth`` levels (walked: only for an item whose
    brackets say it may not)."""
    try:
        check_item_depth(item, "entities", max_depth)
    except RequestError:
        return False
    return True

"""Redis key layout: every key of one policy store shares a hash tag, so one slot holds them all.

    verdict:{<store>}:entities   hash  uid-key -> {"v": <version>, "e": <Cedar JSON entity>}
    verdict:{<store>}:refs       hash  uid-key -> newline-joined uid-keys it references
    verdict:{<store>}:version    string, INCR'd by every write
    verdict:inval:<store>        pub/sub channel: "<version>\\n<uid-key>\\n..." after every write

A uid-key is the compact JSON array ``["Type","id"]``: unambiguous for any id (quotes,
backslashes, newlines, ``::``) and never containing a raw newline, so refs can be newline-joined.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from verdict.model import EntityUid

INVALIDATION_PATTERN = "verdict:inval:*"
_STORE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@functools.lru_cache(maxsize=65_536)
def uid_key(uid: EntityUid) -> str:
    """The hash field naming ``uid`` (memoised: policy literals recur in every request)."""
    return json.dumps([uid.type, uid.id], ensure_ascii=False, separators=(",", ":"))


def key_uid(key: str) -> EntityUid:
    """The uid a hash field names; ValueError if the field is not a uid-key."""
    value = json.loads(key)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(part, str) and part for part in value)
    ):
        raise ValueError("not a uid key")
    return EntityUid(value[0], value[1])


@dataclass(frozen=True)
class StoreKeys:
    """The keys of one policy store."""

    entities: str
    refs: str
    version: str
    channel: str

    @classmethod
    def of(cls, store_id: str) -> StoreKeys:
        """Keys for ``store_id``; store ids are folder names, checked to keep the tag intact."""
        if not _STORE_ID.match(store_id):
            raise ValueError(f"store id {store_id!r} cannot be used as a Redis hash tag")
        prefix = f"verdict:{{{store_id}}}:"
        return cls(
            prefix + "entities", prefix + "refs", prefix + "version", f"verdict:inval:{store_id}"
        )

    @property
    def all(self) -> list[str]:
        """The keys a script touches, in KEYS order."""
        return [self.entities, self.refs, self.version]


def store_of_channel(channel: str) -> str:
    """The store id an invalidation channel belongs to."""
    return channel.removeprefix("verdict:inval:")

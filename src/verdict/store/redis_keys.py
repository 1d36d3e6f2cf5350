"""Redis key layout: one deployment's names, every key of a store sharing one hash tag.

    <ns>:{<store>}:entities             hash  uid-key -> {"v": <version>, "e": <Cedar JSON entity>}
                                              and "epoch" -> the load epoch
    <ns>:{<store>}:refs                 hash  uid-key -> newline-joined uid-keys it references
                                              and "epoch" -> the load epoch, "replid" -> the
                                              replication id of the master that last wrote
    <ns>:{<store>}:version              string, raised by every write (never goes backwards)
    <ns>:{<store>}:loaded               string, the load epoch; absent = not loaded
    <ns>:{<store>}:staging:<token>:*    the two hashes of a bulk load in progress (expire)
    <ns>:db<N>:inval:<store>            pub/sub channel: "<version>\\n<uid-key>\\n..." per write,
                                        "<version>\\n*" when the whole store was replaced

``<ns>`` is the deployment namespace (``redis_namespace``, default ``verdict``). Keys live in one
database already; channels are server-wide, so they also carry the database number: two
deployments on ``/0`` and ``/1`` of one Redis never hear each other's writes.

A uid-key is the compact JSON array ``["Type","id"]``: unambiguous for any id (empty, quotes,
backslashes, newlines, ``::``) and never containing a raw newline, so refs can be newline-joined.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from verdict.model import EntityUid

RESET = "*"  # invalidation line meaning "every entity of the store"
# The field of both hashes that holds the load epoch; no uid-key (a JSON array) can equal it.
EPOCH_FIELD = "epoch"
# The field of the refs hash that holds the replication id of the master that last wrote.
REPLID_FIELD = "replid"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


# Uids memoised only up to this many characters (type and id together): a caller's request
# names up to max_request_references uids of up to max_id_bytes per part, and 65,536 long ones
# kept about 330 MB per process (refused requests too: the read comes first).
MEMOISED_UID_CHARS = 128


def uid_key(uid: EntityUid) -> str:
    """The hash field naming ``uid`` (short ones memoised: policy literals recur in every
    request)."""
    if len(uid.type) + len(uid.id) <= MEMOISED_UID_CHARS:
        return _memoised_uid_key(uid)
    return uncached_uid_key(uid)


def uncached_uid_key(uid: EntityUid) -> str:
    """``uid_key`` without the memo (for a uid asked for once)."""
    # json.dumps (ensure_ascii=False) escapes only '"', '\\' and control characters; a type
    # name has none, and an id without them is written as it is: the same text, 4x sooner (a
    # bulk load of 300,000 entities asks for ~1.2 million keys, most of them once).
    type_, id_ = uid
    if _ESCAPED.search(id_) is None and _ESCAPED.search(type_) is None:
        return '["' + type_ + '","' + id_ + '"]'
    return json.dumps([type_, id_], ensure_ascii=False, separators=(",", ":"))


_ESCAPED = re.compile(r'[\x00-\x1f"\\]')


_memoised_uid_key = functools.lru_cache(maxsize=65_536)(uncached_uid_key)


def key_uid(key: str) -> EntityUid:
    """The uid a hash field names; ValueError if the field is not a uid-key.

    Cedar ids may be empty (``User::""``); types may not.
    """
    value = json.loads(key)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(part, str) for part in value)
        or not value[0]
    ):
        raise ValueError("not a uid key")
    return EntityUid(value[0], value[1])


def check_name(kind: str, name: str) -> str:
    """``name`` if it is safe inside a key, a hash tag and a subscription pattern."""
    if not _NAME.match(name):
        raise ValueError(f"{kind} {name!r} cannot be used in Redis key names")
    return name


@dataclass(frozen=True)
class KeyLayout:
    """The names of one deployment: its namespace and the database it uses."""

    namespace: str = "verdict"
    db: int = 0

    def __post_init__(self) -> None:
        check_name("redis namespace", self.namespace)

    @property
    def channel_prefix(self) -> str:
        """Every invalidation channel of this deployment starts with this."""
        return f"{self.namespace}:db{self.db}:inval:"

    @property
    def pattern(self) -> str:
        """The pattern the invalidation listener subscribes to."""
        return self.channel_prefix + "*"

    def store_of_channel(self, channel: str) -> str | None:
        """The store id an invalidation channel belongs to (None if not one of ours)."""
        if not channel.startswith(self.channel_prefix):
            return None
        return channel[len(self.channel_prefix) :]

    def store(self, store_id: str) -> StoreKeys:
        """The keys of ``store_id``; store ids are folder names, checked to keep the tag intact."""
        check_name("store id", store_id)
        prefix = f"{self.namespace}:{{{store_id}}}:"
        return StoreKeys(
            prefix + "entities",
            prefix + "refs",
            prefix + "version",
            prefix + "loaded",
            self.channel_prefix + store_id,
            prefix,
        )


DEFAULT_LAYOUT = KeyLayout()


@dataclass(frozen=True)
class StoreKeys:
    """The keys of one policy store."""

    entities: str
    refs: str
    version: str
    marker: str
    channel: str
    prefix: str

    @classmethod
    def of(cls, store_id: str, layout: KeyLayout = DEFAULT_LAYOUT) -> StoreKeys:
        """Keys for ``store_id`` in ``layout``."""
        return layout.store(store_id)

    @property
    def all(self) -> list[str]:
        """The keys the slice and write scripts touch, in KEYS order."""
        return [self.entities, self.refs, self.version, self.marker]

    def staging(self, token: str) -> tuple[str, str]:
        """The (entities, refs) hashes a bulk load named ``token`` fills before its switch."""
        check_name("load token", token)
        return (f"{self.prefix}staging:{token}:entities", f"{self.prefix}staging:{token}:refs")

"""Redis connections whose commands hiredis packs (in C) instead of redis-py's asyncio packer.

redis-py's asyncio connection packs every argument in Python: a bulk load of 300,000 entities
spent ~2 of its ~3.4 CPU-seconds of writes there. hiredis (already redis-py's reply parser
here) packs the same bytes in C. Arguments hiredis does not take (bool, None, bytearray) go to
redis-py's own packer, which refuses them or packs them as before; tests/unit/
test_redis_packing.py holds the two packers to the same bytes.
"""

from __future__ import annotations

from typing import Any, TypeVar

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.typing import EncodableT


class _HiredisPacking(AbstractConnection):
    """Packs a command in one hiredis call; the rest of the connection is redis-py's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # hiredis encodes text as UTF-8, strictly: redis-py's default, the only one Verdict sets.
        self._hiredis_packs = (self.encoder.encoding, self.encoder.encoding_errors) == (
            "utf-8",
            "strict",
        )

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        head = args[0]
        if not self._hiredis_packs:
            return super().pack_command(*args)
        # A command name holding literal arguments (``"CONFIG GET"``) is split, as redis-py does.
        if isinstance(head, str):
            command: tuple[Any, ...] = (*head.encode().split(), *args[1:])
        elif isinstance(head, bytes) and b" " in head:
            command = (*head.split(), *args[1:])
        else:
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(command)]
        except TypeError:  # bool, None, bytearray...: redis-py's packer says what is wrong
            return super().pack_command(*args)


_Connection = TypeVar("_Connection", bound=AbstractConnection)
_made: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def hiredis_packing(connection_class: type[_Connection]) -> type[_Connection]:
    """``connection_class`` with its commands packed by hiredis (one class per class)."""
    made = _made.get(connection_class)
    if made is None:
        bases = (_HiredisPacking, connection_class)
        made = _made[connection_class] = type(connection_class.__name__, bases, {})
    return made  # type: ignore[return-value]

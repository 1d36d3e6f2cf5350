"""hiredis packs every command into the bytes redis-py's asyncio packer makes, or both refuse it."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import DataError

from verdict.config import Settings
from verdict.store.redis_connect import make_client
from verdict.store.redis_failures import select_apart
from verdict.store.redis_packing import hiredis_packing

# Everything a caller of redis-py may pass: text (non-ASCII, lone surrogates, spaces), bytes,
# integers past 64 bits, floats (NaN, infinities), and what redis-py refuses (bool, None,
# bytearray); long values cross redis-py's 6,000-byte buffer cutoff.
ARGUMENTS = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="ab é", min_size=5_990, max_size=6_010),
    st.binary(max_size=20),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary(max_size=8).map(bytearray),
    st.binary(max_size=8).map(lambda data: memoryview(data)),
)
HEADS = st.one_of(
    st.sampled_from(["SET", "HSET", "CONFIG GET", "client  setname", b"GET", b"CONFIG SET"]),
    st.text(max_size=12),
    st.binary(max_size=12),
)


def packed(connection: AbstractConnection, args: tuple[Any, ...]) -> bytes | str:
    try:
        return b"".join(bytes(part) for part in connection.pack_command(*args))
    except (DataError, UnicodeEncodeError) as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=600, deadline=None)
@given(head=HEADS, rest=st.lists(ARGUMENTS, max_size=6))
def test_hiredis_packs_what_redis_py_packs(head: str | bytes, rest: list[Any]) -> None:
    args = (head, *rest)
    assert packed(hiredis_packing(Connection)(), args) == packed(Connection(), args)


def test_a_refused_argument_is_refused_as_redis_py_refuses_it() -> None:
    for bad in (True, None, bytearray(b"x")):
        result = packed(hiredis_packing(Connection)(), ("SET", "k", bad))
        assert result == packed(Connection(), ("SET", "k", bad))
    refusal = packed(hiredis_packing(Connection)(), ("SET", True))
    assert isinstance(refusal, str)
    assert refusal.startswith("DataError")


def test_another_encoding_keeps_redis_py_packer() -> None:
    latin = hiredis_packing(Connection)(encoding="latin-1")
    assert packed(latin, ("SET", "é")) == packed(Connection(encoding="latin-1"), ("SET", "é"))
    assert b"\xe9" in latin.pack_command("SET", "é")[0]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:1/0", Connection),
        ("rediss://127.0.0.1:1/0", SSLConnection),
        ("unix:///tmp/nowhere.sock", UnixDomainSocketConnection),
    ],
)
def test_the_verdict_client_packs_with_hiredis(url: str, kind: type[Connection]) -> None:
    client = make_client(Settings(redis_url=url))
    assert isinstance(client, aioredis.Redis)
    made = client.connection_pool.connection_class
    assert issubclass(made, kind)
    assert made is select_apart(hiredis_packing(kind))  # its SELECT apart: redis_failures
    assert made.pack_command is not kind.pack_command

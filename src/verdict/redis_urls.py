"""The one check of a Redis URL, shared by Settings and the CLI's --redis-url flags."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

REDIS_SCHEMES = ("redis", "rediss", "unix")
# The database of redis:// and rediss:// (their path), and ?db= (every scheme, unix:// too).
_DATABASE_PATH = re.compile(r"/?[0-9]*")
_DATABASE = re.compile(r"[0-9]+")


def redis_url_problem(url: str) -> str | None:
    """Why redis-py cannot be given ``url`` as meant, or None: a scheme it refuses (only
    when it first connects, as a traceback); a port that is not a number; a database that is
    not a number, which it reads leniently into another database (``/abc`` and ``/11x``: 0,
    ``/1/2``: 12)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # "redis://[::1": an unclosed IPv6 literal
        return "is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in REDIS_SCHEMES:
        return "must be a redis://, rediss:// or unix:// URL"
    try:
        parts.port  # noqa: B018 (raises for a port that is not a number up to 65535)
    except ValueError:
        return "must have a port from 0 to 65535"
    databases = parse_qs(parts.query).get("db", [])
    # redis-py takes the first ?db= and then ignores the path; all of them must be numbers.
    path_database = scheme != "unix" and not _DATABASE_PATH.fullmatch(parts.path)
    if path_database or any(not _DATABASE.fullmatch(db) for db in databases):
        return f"the database must be a number (e.g. {'?db=0' if scheme == 'unix' else '/0'})"
    return None

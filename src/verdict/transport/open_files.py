"""Make sure the process may open enough files for its connection limit before it serves."""

from __future__ import annotations

import resource

# Descriptors the process needs besides client connections: the listening socket, the
# interpreter's own files, epoll and wakeup fds of grpc and asyncio, the metrics port, a reload.
RESERVED = 64


class OpenFilesError(Exception):
    """The hard open-files limit is below what the configured connection limits need."""


def open_files_needed(max_connections: int, redis_connections: int) -> int:
    """Descriptors a server with these limits can hold at once."""
    return max_connections + redis_connections + RESERVED


def ensure_open_files(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to ``needed`` if the hard limit allows; return the soft limit.

    Raises OpenFilesError when even the hard limit is lower: with too few descriptors, accepted
    sockets would crowd out Redis connections and calls would fail under a connection flood.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OpenFilesError(
            f"the open-files limit ({hard}) is below the {needed} descriptors this configuration "
            f"can hold (max_connections + Redis connections + {RESERVED}); raise `ulimit -n` "
            "or lower VERDICT_MAX_CONNECTIONS"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed

"""A worker process's entry point (started by the supervisor): keeps its signals, then serves."""

from __future__ import annotations

import sys

from verdict import early_signals


def main(argv: list[str]) -> int:
    """``python -m verdict.worker FD PARENT_PID`` (not a command for people): keep SIGHUP,
    SIGTERM and SIGINT from here on, then import and run the worker. The imports
    (grpc, Cedar, Redis, the server) take ~0.5 s, in which these signals' default actions
    killed the worker: a reload forwarded by the supervisor, or a stray `pkill -HUP`."""
    early_signals.keep_until_serving()
    from verdict.worker_server import main as serve

    return serve(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A worker's entry point (``python -m verdict.worker FD PARENT_PID``, started by the supervisor;
not a command for people): its signals are kept before the server's modules are imported."""

from __future__ import annotations

import sys

from verdict import early_signals


def main(argv: list[str]) -> int:
    """Keep SIGHUP/SIGTERM/SIGINT from here on, then import and run the worker. The imports
    (grpc, Cedar, Redis, the server) take ~0.5 s, in which these signals' default actions
    killed the worker: a reload forwarded by the supervisor, or a stray `pkill -HUP`."""
    early_signals.keep_until_serving()
    from verdict.worker_server import main as serve

    return serve(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Verdict: a Cedar policy decision point for lending services, served over gRPC."""

import os

__version__ = "0.1.0"

# grpc core prints its own INFO lines (GOAWAY, keepalive) to stderr, in its own format and
# possibly in the middle of a JSON log line; Verdict reports through structlog instead. Set
# before anything here imports grpc; an operator's own GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

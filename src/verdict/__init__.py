"""Verdict: a Cedar policy decision point for lending services, served over gRPC."""

__version__ = "0.1.0"

"""Telemetry: structured logging now; metrics and the decision audit log slot in here."""

"""The table of ``verdict`` commands: where each is registered, and its one-line summary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A top-level command: the cli module registering it, the function doing so (which may
    register others of the same module too), and the summary ``verdict --help`` lists."""

    module: str
    register: str
    summary: str


COMMANDS = {
    "serve": Command("serve", "add_serve_command", "serve decisions over gRPC"),
    "check": Command(
        "check", "add_check_command", "answer one decision, offline or from a running server"
    ),
    "validate": Command("validate", "add_validate_command", "check every policy store"),
    "test": Command("test", "add_test_command", "run policy regression suites"),
    "entities": Command(
        "entities",
        "add_entities_command",
        "load or export entities in Redis; put, delete or get them on a server",
    ),
    "fmt": Command("authoring", "add_authoring_commands", "format policy files the Cedar way"),
    "diff": Command(
        "authoring",
        "add_authoring_commands",
        "compare two policy trees: policies and flipped decisions",
    ),
    "version": Command("version", "add_version_command", "print each store's content version"),
    "seal": Command(
        "seal", "add_seal_command", "seal policy stores: served only while their files match"
    ),
    "audit": Command("audit", "add_audit_command", "verify or replay the decision audit log"),
    "healthcheck": Command(
        "healthcheck",
        "add_healthcheck_command",
        "is a running server SERVING? (for HEALTHCHECK and probes)",
    ),
}


def summary(name: str) -> str:
    """The one-line help of command ``name``, for its module's parser."""
    return COMMANDS[name].summary

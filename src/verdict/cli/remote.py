"""What the commands that ask a running server share: the client, its failures, its answers
(their flags are in ``server_flags``, which imports no gRPC)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import TypeVar

import grpc

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.cli.client_checks import bearer_token, flag_problems, tls_problems
from verdict.cli.common import fail
from verdict.client import MalformedReplyError, VerdictClient, bearer, tls_credentials
from verdict.model import AuthorizationResult, Decision, DenyKind, EvaluationError, shown_text

T = TypeVar("T")


def credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS channel credentials from the --tls-* flags, or None for plaintext."""
    if not (args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name):
        return None
    problems = tls_problems(args)
    if problems:
        fail("\n".join(problems))
    return tls_credentials(args.tls_ca, args.tls_cert, args.tls_key)


def connect(args: argparse.Namespace) -> VerdictClient:
    """A client to ``--server`` with the flags' TLS, token and deadline (stops on flags that
    cannot work: before any call, so that grpc logs nothing of its own)."""
    problems = flag_problems(args)
    if problems:
        fail("\n".join(problems))
    token = bearer_token(args)
    options: dict[str, str] = {}
    if args.tls_server_name:
        options["grpc.ssl_target_name_override"] = args.tls_server_name
    return VerdictClient(
        args.server,
        timeout=args.timeout,
        credentials=credentials(args),
        metadata=bearer(token) if token else (),
        options=options,
    )


def ask(args: argparse.Namespace, call: Callable[[VerdictClient], T]) -> T:
    """``call`` on a client to ``--server``; a gRPC failure stops the command with one line."""
    with connect(args) as client:
        try:
            return call(client)
        except grpc.RpcError as exc:
            fail(in_flag_terms(rpc_failure(exc, args.server), args))
        except MalformedReplyError as exc:
            fail(f"the server at {args.server} sent a malformed reply: {exc}")


def rpc_failure(exc: Exception, server: str) -> str:
    """One line for a failed call: the status code and the server's message (which the server
    keeps free of request data); anything but a gRPC error is re-raised."""
    if not isinstance(exc, grpc.RpcError) or not isinstance(exc, grpc.Call):
        raise exc
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the server at {server} (UNAVAILABLE)"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from the server at {server} within the timeout (DEADLINE_EXCEEDED)"
    details = shown_text(exc.details() or "")  # the server's words, controls escaped
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return details or "invalid request"  # "field: problem", as offline checks say
    return f"{code.name}: {details or 'no detail'}"


# Request fields a server's INVALID_ARGUMENT names that the offline check has no name for,
# and the flag of this command that filled each. The others (principal, action, resource,
# context_json, entities_json) are named as the offline check names them, so one request
# reads the same refused by the files or by the server.
_FIELD_FLAGS = {"min_entity_version": "min_version"}
_UNKNOWN_STORE = "policy_store_id: names no loaded policy store"


def in_flag_terms(message: str, args: argparse.Namespace) -> str:
    """``message`` with a leading request field renamed to the flag that set it, when this
    command has that flag (``entities put`` sends its FILEs as entities_json: left as is)."""
    if message == _UNKNOWN_STORE and getattr(args, "store", None) is not None:
        # The server does not list its stores to callers: no nearest name to offer.
        return f"--store {args.store!r}: the server has no such policy store"
    if message == _UNKNOWN_STORE:
        return "the server has no default policy store: name one with --store"
    field = re.match(r"[a-z_]+", message)
    dest = _FIELD_FLAGS.get(field[0]) if field else None
    if field is None or dest is None or getattr(args, dest, None) is None:
        return message
    return f"--{dest.replace('_', '-')}{message[field.end() :]}"


_DENY_KINDS = {
    pb.DENY_KIND_EXPLICIT_FORBID: DenyKind.EXPLICIT_FORBID,
    pb.DENY_KIND_NO_PERMIT_MATCHED: DenyKind.NO_PERMIT_MATCHED,
    pb.DENY_KIND_EVALUATION_ERROR: DenyKind.EVALUATION_ERROR,
    pb.DENY_KIND_ENTITY_MISSING: DenyKind.ENTITY_MISSING,
}


def result_from_reply(reply: pb.IsAuthorizedResponse) -> AuthorizationResult:
    """The domain result a server's reply stands for (errors carry their category only: the
    server never sends Cedar's text, which may hold entity data)."""
    allowed = reply.decision == pb.DECISION_ALLOW
    deny_kind = None if allowed else _DENY_KINDS.get(reply.deny_kind)
    determining = tuple(reply.determining_policies)
    return AuthorizationResult(
        decision=Decision.ALLOW if allowed else Decision.DENY,
        determining_policies=determining,
        errors=tuple(EvaluationError(e.policy_id, e.message) for e in reply.errors),
        policy_version=reply.policy_version,
        store_id=reply.policy_store_id,
        # A permit overruled by errors is the one DENY with errors and no determining policy.
        denied_for_errors=deny_kind is DenyKind.EVALUATION_ERROR and not determining,
        entity_version=reply.entity_version,
        deny_kind=deny_kind,
    )

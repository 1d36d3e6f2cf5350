"""The AuthorizationService servicer: translates requests, delegates to the engine, maps errors."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import structlog

from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.engine.authorizer import Authorizer
from verdict.errors import BatchTooLargeError, RequestError, ValueBudgetError, VerdictError
from verdict.json_values import ValueBudget
from verdict.model import AuthorizationRequest
from verdict.telemetry import metrics
from verdict.telemetry.log_budget import LogBudget
from verdict.transport.convert import RequestLimits, request_from_proto, response_to_proto
from verdict.transport.decisions import DecisionRecorder
from verdict.transport.status import (
    INTERNAL_MESSAGE,
    status_for,
    status_message,
    status_metadata,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")


async def answer_or_abort(
    context: grpc.aio.ServicerContext[object, object],
    work: Callable[[], Awaitable[T]],
    rpc: str,
    logs: LogBudget,
) -> T:
    """Run ``work``; turn domain errors into their status and anything else into INTERNAL.

    grpc.aio would otherwise send an unexpected exception's text to the caller as UNKNOWN,
    and that text can carry loan data. A caller can provoke errors at will: their log lines
    are capped by ``logs`` (the RPC metrics count every one).
    """
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    try:
        return await work()
    except VerdictError as exc:
        code, message = status_for(exc)
        metadata = status_metadata(exc)
        if logs.admit("request_rejected", log):
            log.info("request_rejected", rpc=rpc, code=code.name, error_type=type(exc).__name__)
    except Exception as exc:
        code, message = grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
        if logs.admit("request_failed", log):
            log.error("request_failed", rpc=rpc, error_type=type(exc).__name__)
    # Trailing metadata given to abort replaces what was set: keep the call's x-request-id.
    await context.abort(code, message, (*(context.trailing_metadata() or ()), *metadata))
    raise AssertionError("unreachable: abort raises")


def deadline_of(context: grpc.aio.ServicerContext[object, object]) -> float | None:
    """The caller's deadline as a time.monotonic() instant (None when the caller set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class AuthorizationServicer(pb_grpc.AuthorizationServiceServicer):
    """gRPC face of the Authorizer; makes no decisions of its own."""

    def __init__(
        self,
        authorizer: Authorizer,
        limits: RequestLimits,
        recorder: DecisionRecorder | None = None,
    ) -> None:
        self._authorizer = authorizer
        self._limits = limits
        self._recorder = recorder
        self._logs = LogBudget()

    async def IsAuthorized(
        self,
        request: pb.IsAuthorizedRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> pb.IsAuthorizedResponse:
        async def work() -> pb.IsAuthorizedResponse:
            started = time.perf_counter()
            domain = self._convert_or_raise(request, deadline_of(context), None)
            # The store joins the call's log context (request id, caller, method).
            structlog.contextvars.bind_contextvars(store=domain.store_id or "default")
            result = await self._authorizer.authorize(domain)
            if self._recorder is not None:
                await self._recorder.decided("IsAuthorized", [(domain, result)], started)
            return response_to_proto(result)

        return await answer_or_abort(context, work, "IsAuthorized", self._logs)

    async def BatchAuthorize(
        self,
        request: pb.BatchAuthorizeRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> pb.BatchAuthorizeResponse:
        async def work() -> pb.BatchAuthorizeResponse:
            if len(request.requests) > self._authorizer.max_batch:
                raise BatchTooLargeError(len(request.requests), self._authorizer.max_batch)
            deadline = deadline_of(context)
            # One budget for all items: each may hold up to its own limits, but together
            # they must not add up to seconds of parsing and evaluation (ValueBudgetError
            # refuses the whole call, as soon as the items parsed so far pass it).
            started = time.perf_counter()
            budget = self._limits.batch_budget()
            items = [self._convert(item, deadline, budget) for item in request.requests]
            results = await self._authorizer.authorize_batch(items)
            metrics.BATCH_ITEMS.observe(len(items))
            if self._recorder is not None:
                # Every item, at its position in the call: a record's ``item`` numbered the
                # items that converted, and the refused ones had no record (attack round 20).
                decided = [
                    (item if isinstance(item, AuthorizationRequest) else None, result)
                    for item, result in zip(items, results, strict=True)
                ]
                await self._recorder.decided("BatchAuthorize", decided, started)
            response = pb.BatchAuthorizeResponse()
            for result in results:
                if isinstance(result, VerdictError):
                    response.results.add(error=status_message(result))
                else:
                    response.results.add(response=response_to_proto(result))
            return response

        return await answer_or_abort(context, work, "BatchAuthorize", self._logs)

    def _convert(
        self, item: pb.IsAuthorizedRequest, deadline: float | None, budget: ValueBudget
    ) -> AuthorizationRequest | VerdictError:
        try:
            return self._convert_or_raise(item, deadline, budget)
        except ValueBudgetError:
            raise
        except RequestError as exc:
            return exc

    def _convert_or_raise(
        self, item: pb.IsAuthorizedRequest, deadline: float | None, budget: ValueBudget | None
    ) -> AuthorizationRequest:
        return request_from_proto(item, self._limits, deadline, budget)

"""The async decision shell: pick the snapshot, fetch the entity slice, evaluate."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from verdict.engine.evaluate import check_extra_entities, evaluate, slice_roots
from verdict.errors import BatchTooLargeError, EntityDataError, InternalError, VerdictError
from verdict.model import AuthorizationRequest, AuthorizationResult
from verdict.policy.holder import PolicyHolder
from verdict.store.base import EntityReader, ReadOptions
from verdict.telemetry import metrics

DEFAULT_MAX_BATCH = 100
log = structlog.get_logger(__name__)


class Authorizer:
    """Answers authorization requests; knows neither gRPC nor the storage technology."""

    def __init__(
        self, policies: PolicyHolder, entities: EntityReader, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        self._policies = policies
        self._entities = entities
        self.max_batch = max_batch

    async def authorize(self, request: AuthorizationRequest) -> AuthorizationResult:
        """One decision. Raises VerdictError for bad requests and store failures."""
        # One snapshot per decision: a concurrent reload never mixes policy versions.
        store = self._policies.current.resolve(request.store_id)
        options = ReadOptions(deadline=request.deadline, min_version=request.min_entity_version)
        entity_slice = await self._entities.fetch_slice(
            store.store_id, slice_roots(request, store), options
        )
        check_extra_entities(request, store, entity_slice.entities)
        try:
            return evaluate(request, store, entity_slice.entities.values(), entity_slice.version)
        except EntityDataError:
            # Stored data that parses but fails the schema: as corrupt as unreadable JSON.
            metrics.CORRUPT_ENTITIES.labels(reason="schema_mismatch").inc()
            log.error("entity_data_corrupt", store=store.store_id, reason="schema_mismatch")
            raise

    async def authorize_batch(
        self,
        requests: Sequence[AuthorizationRequest | VerdictError],
    ) -> list[AuthorizationResult | VerdictError]:
        """Answer each item independently, in order; an item's error does not affect the rest.

        Items that already failed to convert are passed in as their error and returned as is.
        """
        if len(requests) > self.max_batch:
            raise BatchTooLargeError(len(requests), self.max_batch)
        return list(await asyncio.gather(*(self._answer(item) for item in requests)))

    async def _answer(
        self,
        item: AuthorizationRequest | VerdictError,
    ) -> AuthorizationResult | VerdictError:
        if isinstance(item, VerdictError):
            return item
        try:
            return await self.authorize(item)
        except VerdictError as exc:
            return exc
        except Exception as exc:  # one item's bug must not sink the whole batch
            log.error("batch_item_failed", error_type=type(exc).__name__)
            return InternalError()

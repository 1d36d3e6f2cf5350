"""Which health names a main-port caller may be told about when a callers file is in use."""

from __future__ import annotations

from verdict.errors import UnauthenticatedError
from verdict.transport.authz import EdgeGuard
from verdict.transport.edge_rules import EdgeRules
from verdict.transport.health import Context, Shows, Visibility

STORE_HEALTH_PREFIX = "store/"


def store_health_name(store_id: str) -> str:
    """The grpc.health.v1 service name that reports whether one policy store can answer."""
    return f"{STORE_HEALTH_PREFIX}{store_id}"


def granted_store_names(guard: EdgeGuard) -> Visibility:
    """Per call: every name but ``store/<id>`` to everyone (probes carry no identity);
    ``store/<id>`` only to a caller whose grant covers ``<id>``, identified as every call is
    (a bearer token, else the client certificate). Anyone else is answered as for a store that
    does not exist, as decisions refuse both alike: an open ``store/<id>`` told any peer which
    tenants a deployment serves."""

    def for_call(context: Context) -> Shows:
        return _CallScope(guard, context)

    return for_call


class _CallScope:
    """One call's view. The caller is identified again at every question (a Check asks once, a
    Watch at each status change and callers reload): a JWT that expired while its Watch stayed
    open is told nothing more of the store from then on, as a decision with it is refused. A
    token's check is a hash lookup, a JWT's a cache hit until its ``exp``."""

    def __init__(self, guard: EdgeGuard, context: Context) -> None:
        self._guard = guard
        self._context = context

    def __call__(self, name: str) -> bool:
        if not name.startswith(STORE_HEALTH_PREFIX):
            return True
        stores = _granted_stores(self._guard.rules.current, self._context)
        return stores is None or name[len(STORE_HEALTH_PREFIX) :] in stores


def _granted_stores(rules: EdgeRules, context: Context) -> frozenset[str] | None:
    """The stores the call's caller is granted (any method group); None for every store; none
    without an identity or with a token that fails (health refuses nobody)."""
    try:
        caller = EdgeGuard.identify(rules, context)
    except UnauthenticatedError:
        return frozenset()
    grant = rules.callers.grant_for(caller)
    return frozenset() if grant is None else grant.stores

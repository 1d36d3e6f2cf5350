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
    """One call's view: its identity and grant, from one rules version, found again only when
    the rules were reloaded (a Watch asks at every status change)."""

    def __init__(self, guard: EdgeGuard, context: Context) -> None:
        self._guard = guard
        self._context = context
        self._rules: EdgeRules | None = None
        self._stores: frozenset[str] | None = frozenset()

    def __call__(self, name: str) -> bool:
        if not name.startswith(STORE_HEALTH_PREFIX):
            return True
        rules = self._guard.rules.current
        if rules is not self._rules:
            self._rules, self._stores = rules, _granted_stores(rules, self._context)
        return self._stores is None or name[len(STORE_HEALTH_PREFIX) :] in self._stores


def _granted_stores(rules: EdgeRules, context: Context) -> frozenset[str] | None:
    """The stores the call's caller is granted (any method group); None for every store; none
    without an identity or with a token that fails (health refuses nobody)."""
    try:
        caller = EdgeGuard.identify(rules, context)
    except UnauthenticatedError:
        return frozenset()
    grant = rules.callers.grant_for(caller)
    return frozenset() if grant is None else grant.stores

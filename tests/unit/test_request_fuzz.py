"""Fuzz: arbitrary request fields give a decision or a field-naming RequestError, nothing else."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cases import BASE_CONTEXT
from tests.conftest import POLICIES
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.app import build_app
from verdict.config import Settings
from verdict.errors import RequestError
from verdict.model import Decision
from verdict.transport.convert import RequestLimits, request_from_proto

APP = build_app(Settings(stores=POLICIES, default_store="lending"))
FIELDS = {
    "principal",
    "principal.type",
    "principal.id",
    "action",
    "action.type",
    "action.id",
    "resource",
    "resource.type",
    "resource.id",
    "context_json",
    "entities_json",
    "policy_store_id",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
context_texts = st.one_of(
    st.text(max_size=40),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["mfa", "now", "source_ip", "x"]), json_values, max_size=4).map(
        lambda d: json.dumps({**BASE_CONTEXT, **d})
    ),
)
ids = st.text(max_size=12)


def decide(request: pb.IsAuthorizedRequest) -> Decision | str:
    try:
        domain = request_from_proto(request, RequestLimits(max_depth=32))
        return asyncio.run(APP.authorizer.authorize(domain)).decision
    except RequestError as exc:
        return exc.field.split("[")[0]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    context=context_texts,
    entities=st.one_of(st.just(""), json_values.map(json.dumps)),
    principal=st.tuples(st.sampled_from(["Employee", "Borrower", "", "Loan"]), ids),
    action=st.sampled_from(["view", "disburse", "", "fly"]),
)
def test_arbitrary_requests_fail_closed(
    context: str, entities: str, principal: tuple[str, str], action: str
) -> None:
    """Every input yields DENY, ALLOW only for a well-formed request, or a named field error."""
    request = pb.IsAuthorizedRequest(
        principal=pb.EntityUid(type=principal[0], id=principal[1]),
        action=pb.EntityUid(type="Action", id=action),
        resource=pb.EntityUid(type="Loan", id="loan-1001"),
        context_json=context,
        entities_json=entities,
    )
    answer = decide(request)
    if isinstance(answer, str):
        assert answer in FIELDS
    elif answer is Decision.ALLOW:
        parsed = json.loads(context)
        assert isinstance(parsed, dict)
        assert principal[0] in ("Employee", "Borrower")
        assert action in ("view", "disburse")

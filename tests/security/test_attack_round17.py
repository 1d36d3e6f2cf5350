"""Attack round 17: the entity slice and the policy selection against Cedar over everything.

Verdict hands Cedar a slice of the stored entities (the closure of a request's roots over
parents and references) and the policies the index selects for the request's scope. This round
looked for a decision where either loses something that changes Cedar's answer (above all a
wrong ALLOW), and for valid Cedar data that Verdict refuses. Real `verdict serve` processes on
loopback (memory store; a real redis-server), real gRPC, IsAuthorized and BatchAuthorize; the
oracle is `cedarpy.is_authorized` over the whole policy set (links written out as static
policies) and every entity. The one allowed difference: DENY where Cedar allows only because an
erroring policy was skipped.

Findings: none. Every attack below held and is kept as an ordinary test:

- A namespaced schema with every feature a slice must follow (common types, optional
  attributes, an entity enum, entity-valued tags on two types, sets and records of entities,
  ipaddr and datetime values, action groups two levels deep) and 25 policies reading it:
  ``principal.manager.manager.suspended``, ``principal.profile.lead.suspended``,
  ``resource.getTag("owner")``, ``principal.getTag("boss").suspended``, ``resource in
  principal.teams``, ``context.rec.who.suspended``, ``context.delegate in Team::"blocked"``,
  ``(if principal has manager then principal.manager else principal) in ...``, ``||``
  hiding a dereference, an entity literal's attribute (``User::"root".suspended``), a set
  literal beside one, ``is ... in``, ``action in [..]``, ``resource in`` scopes and two
  template links (``?principal in`` / ``?resource in``, ``principal == ?principal``). Entity
  references written as ``__entity``, as ``{"type", "id"}`` records and as pairs. Through
  PutEntities/DeleteEntities on Redis (one worker and two, the caches warm) and on the memory
  store (slices right after a write, the pre-parsed whole-version handle after it is built):
  about 33,600 decisions in scratch runs (720 more with ``explain`` on), no difference.
- A schema-less store with request entities (``request_entity_types = ["Doc"]``: inline Docs
  owned by stored users, reviewers, records of references, an inline Doc under another, a
  ``parentDoc`` pointing at a stored or inline Doc) mixed with stored resources in batches:
  4,300 decisions in scratch runs, single calls and batch items alike, no difference.
- Cedar 4 enumerated entity types: the store loads, ``principal == Color::"red"`` and
  ``principal in Color::"blue"`` scopes, enum-typed attributes and context, an id the schema
  does not declare (INVALID_ARGUMENT, where Cedar gives no decision), duration and datetime
  context in both spellings, with strict validation and without.
- A JSON schema with a common context type, ``EntityOrCommon`` attributes, enum and ``tags``
  declarations and an action group in another namespace (``App::Action::"view"`` in
  ``Base::Action::"all"``); ``unless``; a template linked with ``is ... in ?principal`` and
  ``is ... in ?resource``.
- Valid Cedar entity data Verdict could have refused: references as pairs in tags, sets and
  nested records, implicit ipaddr/datetime strings, ``__extn`` with ``args`` (``offset``), an
  enum entity, an action entity equal to the schema's, duplicate parents, ids holding NUL,
  U+2028 and newlines, an empty attribute name, types named ``principal``, ``Set`` and
  ``Bool``. Each accepted exactly when Cedar accepts it; references written in those forms
  and loaded by ``verdict entities load`` are followed by the Redis slice.

Differences kept on purpose (documented, not findings): two identical copies of one entity in
one write are refused ("repeats the uid of item 0", docs/redis.md: duplicate uids in the call)
where Cedar accepts identical duplicates (and refuses differing ones).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cedarpy
import grpc

from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from tests.security.serve_process import fresh_channel
from tests.security.test_attack_round10 import served
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict._gen.verdict.v1 import entities_pb2 as epb
from verdict._gen.verdict.v1 import entities_pb2_grpc as epb_grpc

Uid = dict[str, str]
Json = dict[str, Any]
Case = tuple[Uid, Uid, Uid, Json, list[Json]]

# --- Shared: the store, the two ways of asking Verdict, Cedar's answer -------------------------


def make_store(
    tmp_path: Path,
    policies: str,
    *,
    settings: str = 'validation = "off"\n',
    schema: str | None = None,
    entities: list[Json] | None = None,
    links: list[Json] | None = None,
) -> Path:
    """A stores folder holding one store "s"; its path."""
    stores = tmp_path / "stores"
    store = stores / "s"
    store.mkdir(parents=True)
    (store / "store.toml").write_text(settings)
    (store / "p.cedar").write_text(policies)
    if schema is not None:
        (store / "schema.cedarschema").write_text(schema)
    if entities is not None:
        (store / "entities.json").write_text(json.dumps(entities))
    if links is not None:
        (store / "links.json").write_text(json.dumps(links))
    return stores


def request(case: Case, version: int = 0) -> pb.IsAuthorizedRequest:
    principal, action, resource, context, inline = case
    return pb.IsAuthorizedRequest(
        policy_store_id="s",
        principal=pb.EntityUid(**principal),
        action=pb.EntityUid(**action),
        resource=pb.EntityUid(**resource),
        context_json=json.dumps(context) if context else "",
        entities_json=json.dumps(inline) if inline else "",
        min_entity_version=version,
    )


def verdict_answers(port: int, requests: Sequence[pb.IsAuthorizedRequest]) -> list[list[str]]:
    """Each request's answer as a single call and as an item of one BatchAuthorize:
    ALLOW, DENY or the status code's name."""
    with fresh_channel(port) as channel:
        stub = pb_grpc.AuthorizationServiceStub(channel)
        batch = stub.BatchAuthorize(pb.BatchAuthorizeRequest(requests=requests), timeout=30)
        answers = []
        for item, result in zip(requests, batch.results, strict=True):
            try:
                single = _decision(stub.IsAuthorized(item, timeout=10).decision)
            except grpc.RpcError as error:
                single = error.code().name
            if result.HasField("error"):
                batched = grpc.StatusCode.INVALID_ARGUMENT.name if result.error.code == 3 else "ERR"
            else:
                batched = _decision(result.response.decision)
            answers.append([single, batched])
        return answers


def _decision(value: int) -> str:
    return "ALLOW" if value == pb.DECISION_ALLOW else "DENY"


def cedar_says(
    policies: str, entities: Sequence[Json], schema: str | None, case: Case
) -> tuple[str, bool]:
    """Cedar's decision over every entity (and the request's own) and whether a policy erred."""
    principal, action, resource, context, inline = case
    result = cedarpy.is_authorized(
        {"principal": principal, "action": action, "resource": resource, "context": context},
        policies,
        [*entities, *inline],
        schema,
    )
    decision = {"Allow": "ALLOW", "Deny": "DENY"}.get(result.decision.value, "NODECISION")
    return decision, bool(list(result.diagnostics.errors))


def differences(
    port: int,
    policies: str,
    entities: Sequence[Json],
    schema: str | None,
    cases: list[Case],
    version: int = 0,
) -> list[str]:
    """The cases where Verdict (single call or batch item) answers other than Cedar: a DENY
    where Cedar allows with an erroring policy is not one, nor INVALID_ARGUMENT where Cedar
    gives no decision."""
    found = []
    answers = verdict_answers(port, [request(case, version) for case in cases])
    for case, got in zip(cases, answers, strict=True):
        expected, erred = cedar_says(policies, entities, schema, case)
        for answer in got:
            same = answer == expected or (expected == "NODECISION" and answer == "INVALID_ARGUMENT")
            if not same and not (answer == "DENY" and expected == "ALLOW" and erred):
                found.append(f"{case}: verdict {answer}, cedar {expected} (errors: {erred})")
    return found


def replace_entities(port: int, delete: list[Uid], entities: list[Json]) -> int:
    """Delete ``delete`` and write ``entities`` through the API; the write's version."""
    with fresh_channel(port) as channel:
        stub = epb_grpc.EntityServiceStub(channel)
        uids = [pb.EntityUid(**u) for u in delete]
        stub.DeleteEntities(epb.DeleteEntitiesRequest(policy_store_id="s", uids=uids), timeout=10)
        put = epb.PutEntitiesRequest(policy_store_id="s", entities_json=json.dumps(entities))
        version: int = stub.PutEntities(put, timeout=10).version
        return version


def ref(type_: str, id_: str, form: int = 0) -> Any:
    """A reference as ``__entity`` (0), a ``{"type", "id"}`` record (1) or a pair (2; Cedar
    reads the last two as references where the schema expects an entity)."""
    if form == 1:
        return {"type": type_, "id": id_}
    if form == 2:
        return [type_, id_]
    return {"__entity": {"type": type_, "id": id_}}


# --- A rich namespaced schema, through writes -------------------------------------------------

RICH_SCHEMA = """
namespace Org {
  type Profile = { team: Team, lead?: User, note?: String };
  entity Level enum ["low", "high"];
  entity Team in [Team] { lead?: User, suspended?: Bool, level?: Level };
  entity User in [Team] {
    manager?: User, profile?: Profile, teams?: Set<Team>, suspended?: Bool, level?: Level,
    ip?: ipaddr, since?: datetime,
  } tags User;
  entity Doc in [Team] {
    owner?: User, reviewers?: Set<User>, meta?: { holder: User, dept?: Team }, locked?: Bool
  } tags Team;
  action all;
  action view in [all] appliesTo { principal: [User], resource: [Doc, Team],
     context: { delegate?: User, lvl?: Level, ips?: Set<ipaddr>, rec?: { who: User } } };
  action edit in [view] appliesTo { principal: [User], resource: [Doc],
     context: { delegate?: User, lvl?: Level, ips?: Set<ipaddr>, rec?: { who: User } } };
  action share in [all] appliesTo { principal: [User], resource: [Doc] };
}
"""


def lit(type_: str, id_: str) -> str:
    return f'Org::{type_}::"{id_}"'


RICH_STATIC = f"""
@id("p-all") permit(principal, action in {lit("Action", "all")}, resource);
@id("p-team") permit(principal in {lit("Team", "t0")}, action, resource is Org::Doc);
@id("f-mgr2") forbid(principal, action, resource) when {{ principal has manager &&
  principal.manager has manager && principal.manager.manager has suspended &&
  principal.manager.manager.suspended }};
@id("f-rev") forbid(principal, action == {lit("Action", "edit")}, resource is Org::Doc) when {{
  resource has reviewers && resource.reviewers.contains(principal) }};
@id("f-lead") forbid(principal, action, resource) when {{ principal has profile &&
  principal.profile has lead && principal.profile.lead has suspended &&
  principal.profile.lead.suspended }};
@id("f-proteam") forbid(principal, action, resource) when {{ principal has profile &&
  principal.profile.team in {lit("Team", "blocked")} }};
@id("f-tag") forbid(principal, action, resource) when {{ resource.hasTag("owner") &&
  resource.getTag("owner") has suspended && resource.getTag("owner").suspended == true }};
@id("f-tagin") forbid(principal, action, resource is Org::Doc) when {{
  resource.hasTag("grp") && resource.getTag("grp") in {lit("Team", "blocked")} }};
@id("f-ptag") forbid(principal, action, resource) when {{ principal.hasTag("boss") &&
  principal.getTag("boss") has suspended && principal.getTag("boss").suspended }};
@id("f-deleg") forbid(principal, action, resource) when {{ context has delegate &&
  context.delegate in {lit("Team", "blocked")} }};
@id("f-rec") forbid(principal, action, resource) when {{ context has rec &&
  context.rec.who has suspended && context.rec.who.suspended }};
@id("f-lit") forbid(principal, action == {lit("Action", "share")}, resource) when {{
  {lit("User", "root")} has suspended && {lit("User", "root")}.suspended == true }};
@id("f-in-teams") forbid(principal, action, resource) when {{ principal has teams &&
  resource in principal.teams && resource has locked && resource.locked }};
@id("f-ite") forbid(principal, action, resource) when {{
  (if principal has manager then principal.manager else principal) in {lit("Team", "blocked")} }};
@id("f-short") forbid(principal, action, resource) when {{
  (principal has suspended && principal.suspended) ||
  (resource has owner && resource.owner has suspended && resource.owner.suspended) }};
@id("f-meta") forbid(principal, action, resource is Org::Doc) when {{ resource has meta &&
  resource.meta.holder has level && resource.meta.holder.level == {lit("Level", "high")} &&
  !(principal has level && principal.level == {lit("Level", "high")}) }};
@id("f-isin") forbid(principal is Org::User in {lit("Team", "banned")}, action, resource);
@id("f-res-in") forbid(principal,
  action in [{lit("Action", "edit")}, {lit("Action", "share")}],
  resource in {lit("Team", "frozen")});
@id("f-lvl") forbid(principal, action, resource) when {{ context has lvl &&
  context.lvl == {lit("Level", "high")} && !(principal has level) }};
@id("f-ip") forbid(principal, action, resource) when {{ principal has ip && context has ips &&
  context.ips.contains(principal.ip) }};
@id("f-teamlead") forbid(principal, action, resource is Org::Team) when {{ resource has lead &&
  resource.lead has suspended && resource.lead.suspended }};
@id("f-deleg-mgr") forbid(principal, action, resource) when {{ context has delegate &&
  context.delegate has manager && context.delegate.manager == principal }};
@id("f-setlit") forbid(principal, action, resource) when {{
  [{lit("User", "root")}, {lit("User", "u1")}].contains(principal) &&
  {lit("User", "u1")} in {lit("Team", "blocked")} }};
"""
RICH_TEMPLATES = """
@id("t-fb") forbid(principal in ?principal, action, resource in ?resource);
@id("t-pm") permit(principal == ?principal, action == Org::Action::"share", resource);
"""
RICH_LINKS = [
    {
        "id": "l-fb1",
        "template": "t-fb",
        "values": {"?principal": lit("Team", "t3"), "?resource": lit("Team", "t1")},
    },
    {"id": "l-pm1", "template": "t-pm", "values": {"?principal": lit("User", "u2")}},
]
RICH_ORACLE = (
    RICH_STATIC
    + f'@id("l-fb1") forbid(principal in {lit("Team", "t3")}, action, '
    + f"resource in {lit('Team', 't1')});\n"
    + f'@id("l-pm1") permit(principal == {lit("User", "u2")}, '
    + 'action == Org::Action::"share", resource);\n'
)
USERS = ["u0", "u1", "u2", "u3", "u4", "root"]
TEAMS = ["t0", "t1", "t2", "t3", "blocked", "banned", "frozen"]  # parents only to later ones
DOCS = ["d0", "d1", "d2", "d3"]
RICH_UIDS = [
    {"type": f"Org::{type_}", "id": id_}
    for type_, ids in (("User", USERS), ("Team", TEAMS), ("Doc", DOCS))
    for id_ in ids
]


def org(type_: str, id_: str, rng: random.Random | None = None) -> Any:
    return ref(f"Org::{type_}", id_, rng.randint(0, 2) if rng else 0)


def uid(type_: str, id_: str) -> Uid:
    return {"type": type_, "id": id_}


def rich_user(rng: random.Random, id_: str) -> Json:
    attrs: Json = {}
    if rng.random() < 0.5:
        attrs["manager"] = org("User", rng.choice(USERS), rng)
    if rng.random() < 0.4:
        profile = {"team": org("Team", rng.choice(TEAMS), rng)}
        if rng.random() < 0.5:
            profile["lead"] = org("User", rng.choice(USERS), rng)
        attrs["profile"] = profile
    if rng.random() < 0.4:
        attrs["teams"] = [org("Team", rng.choice(TEAMS), rng) for _ in range(rng.randint(0, 2))]
    if rng.random() < 0.5:
        attrs["suspended"] = rng.random() < 0.5
    if rng.random() < 0.3:
        attrs["level"] = org("Level", rng.choice(["low", "high"]), rng)
    if rng.random() < 0.3:
        attrs["ip"] = {"__extn": {"fn": "ip", "arg": rng.choice(["10.0.0.1", "10.0.0.2"])}}
    entity = {
        "uid": uid("Org::User", id_),
        "attrs": attrs,
        "parents": [uid("Org::Team", rng.choice(TEAMS)) for _ in range(rng.choice([0, 1, 2]))],
    }
    if rng.random() < 0.3:
        entity["tags"] = {"boss": org("User", rng.choice(USERS), rng)}
    return entity


def rich_entities(rng: random.Random) -> list[Json]:
    entities = [rich_user(rng, id_) for id_ in USERS if rng.random() > 0.15]
    for number, id_ in enumerate(TEAMS):
        if rng.random() < 0.3:
            continue
        attrs: Json = {}
        if rng.random() < 0.4:
            attrs["lead"] = org("User", rng.choice(USERS), rng)
        if rng.random() < 0.3:
            attrs["suspended"] = rng.random() < 0.5
        later = TEAMS[number + 1 :]
        parents = [uid("Org::Team", rng.choice(later))] if later and rng.random() < 0.4 else []
        entities.append({"uid": uid("Org::Team", id_), "attrs": attrs, "parents": parents})
    for id_ in DOCS:
        if rng.random() < 0.1:
            continue
        attrs = {}
        if rng.random() < 0.5:
            attrs["owner"] = org("User", rng.choice(USERS), rng)
        if rng.random() < 0.4:
            count = rng.randint(0, 2)
            attrs["reviewers"] = [org("User", rng.choice(USERS), rng) for _ in range(count)]
        if rng.random() < 0.3:
            meta = {"holder": org("User", rng.choice(USERS), rng)}
            if rng.random() < 0.5:
                meta["dept"] = org("Team", rng.choice(TEAMS), rng)
            attrs["meta"] = meta
        if rng.random() < 0.4:
            attrs["locked"] = rng.random() < 0.5
        doc = {
            "uid": uid("Org::Doc", id_),
            "attrs": attrs,
            "parents": [uid("Org::Team", rng.choice(TEAMS)) for _ in range(rng.choice([0, 1, 2]))],
        }
        if rng.random() < 0.3:
            doc["tags"] = {"grp": org("Team", rng.choice(TEAMS), rng)}
        entities.append(doc)
    return entities


def rich_case(rng: random.Random) -> Case:
    action = rng.choice(["view", "edit", "share"])
    if action == "view" and rng.random() < 0.3:
        resource = uid("Org::Team", rng.choice(TEAMS))
    else:
        resource = uid("Org::Doc", rng.choice(DOCS))
    context: Json = {}
    if action != "share":
        if rng.random() < 0.3:
            context["delegate"] = org("User", rng.choice(USERS), rng)
        if rng.random() < 0.2:
            context["lvl"] = org("Level", rng.choice(["low", "high"]), rng)
        if rng.random() < 0.2:
            context["ips"] = [{"__extn": {"fn": "ip", "arg": "10.0.0.1"}}]
        if rng.random() < 0.3:
            context["rec"] = {"who": org("User", rng.choice(USERS), rng)}
    principal = uid("Org::User", rng.choice(USERS))
    return principal, uid("Org::Action", action), resource, context, []


def rich_rounds(port: int, seed: int, rounds: int, pause: float = 0.0) -> list[str]:
    """Random states written through the API, 12 decisions each (single and batch) with the
    write's version; with ``pause``, half the rounds wait before deciding (the memory store's
    whole-version handle is built by then)."""
    rng = random.Random(seed)
    found: list[str] = []
    for _ in range(rounds):
        entities = rich_entities(rng)
        version = replace_entities(port, RICH_UIDS, entities)
        if pause and rng.random() < 0.5:
            time.sleep(pause)
        cases = [rich_case(rng) for _ in range(12)]
        found += differences(port, RICH_ORACLE, entities, RICH_SCHEMA, cases, version)
    return found


def rich_store(tmp_path: Path, settings: str) -> Path:
    return make_store(
        tmp_path,
        RICH_STATIC + RICH_TEMPLATES,
        settings=settings,
        schema=RICH_SCHEMA,
        links=RICH_LINKS,
    )


def test_rich_schema_slices_decide_as_cedar_on_redis(tmp_path: Path, redis: RedisProcess) -> None:
    """Chains, sets, records, entity-valued tags, context references, literals and links over
    a namespaced schema, every reference form: Redis slices (cache misses and hits) decide as
    Cedar over every entity, single calls and batch items."""
    stores = rich_store(tmp_path, 'validation = "off"\nentities_source = "writes"\n')
    with served(stores, "--redis-url", redis.url) as (_, port, _log):
        assert rich_rounds(port, seed=17, rounds=120) == []


def test_rich_schema_slices_decide_as_cedar_on_the_memory_store(tmp_path: Path) -> None:
    """The same on the memory store: right after each write (slices) and once the version's
    pre-parsed handle is built (the whole set, selected by the slice's ancestry)."""
    stores = rich_store(tmp_path, 'validation = "off"\n')
    with served(stores) as (_, port, _log):
        assert rich_rounds(port, seed=71, rounds=80, pause=0.15) == []


# --- Request entities beside stored ones, no schema -------------------------------------------

PLAIN_POLICIES = """
@id("p1") permit(principal, action, resource);
@id("f-owner-susp") forbid(principal, action, resource) when { resource has owner &&
  resource.owner has suspended && resource.owner.suspended };
@id("f-owner-in") forbid(principal, action, resource) when { resource has owner &&
  resource.owner in Group::"blocked" };
@id("f-res-in-teams") forbid(principal, action, resource) when { principal has teams &&
  resource in principal.teams };
@id("f-princ-in-res") forbid(principal, action, resource) when { resource has grp &&
  principal in resource.grp };
@id("f-revs") forbid(principal, action, resource) when { resource has reviewers &&
  resource.reviewers.containsAny([User::"x", principal]) && resource has owner &&
  resource.owner has manager && resource.owner.manager has suspended &&
  resource.owner.manager.suspended };
@id("f-rec") forbid(principal, action, resource) when { resource has meta &&
  resource.meta has who && resource.meta.who in Group::"blocked" };
@id("f-lit") forbid(principal, action == Action::"del", resource) when {
  Group::"blocked" in Group::"root" };
@id("f-lit2") forbid(principal, action, resource) when { User::"x" has suspended &&
  User::"x".suspended && resource has owner && resource.owner == User::"x" };
@id("f-ctx") forbid(principal, action, resource) when { context has d &&
  context.d has manager && context.d.manager in Group::"blocked" };
@id("f-ctxset") forbid(principal, action, resource) when { context has ds &&
  context.ds.contains(principal) && principal in Group::"root" };
@id("f-doc-in-doc") forbid(principal, action, resource) when { resource has parentDoc &&
  resource.parentDoc in Doc::"secret" };
@id("f-act") forbid(principal, action in Action::"admin", resource) when {
  principal has suspended && principal.suspended };
@id("f-scope-res") forbid(principal, action, resource in Doc::"secret");
@id("f-scope-isin") forbid(principal is User in Group::"root", action == Action::"del", resource);
"""
PLAIN_USERS = ["a", "b", "c", "x", "m"]
GROUPS = ["g", "blocked", "root", "h"]  # parents only to later ones
PLAIN_DOCS = ["s1", "s2", "secret"]
INLINE_DOCS = ["n1", "n2", "n3"]
PLAIN_UIDS = [
    uid(type_, id_)
    for type_, ids in (("User", PLAIN_USERS), ("Group", GROUPS), ("Doc", PLAIN_DOCS))
    for id_ in ids
]


def plain_entities(rng: random.Random) -> list[Json]:
    entities: list[Json] = []
    for id_ in PLAIN_USERS:
        if rng.random() < 0.15:
            continue
        attrs: Json = {}
        if rng.random() < 0.5:
            attrs["suspended"] = rng.random() < 0.5
        if rng.random() < 0.4:
            attrs["manager"] = ref("User", rng.choice(PLAIN_USERS))
        if rng.random() < 0.4:
            targets = [("Group", g) for g in GROUPS] + [("Doc", d) for d in PLAIN_DOCS]
            attrs["teams"] = [ref(*rng.choice(targets)) for _ in range(rng.randint(0, 2))]
        parents = [uid("Group", rng.choice(GROUPS)) for _ in range(rng.choice([0, 1, 2]))]
        entities.append({"uid": uid("User", id_), "attrs": attrs, "parents": parents})
    for number, id_ in enumerate(GROUPS):
        if rng.random() < 0.3:
            continue
        parents = [uid("Group", g) for g in GROUPS[number + 1 :] if rng.random() < 0.3]
        entities.append({"uid": uid("Group", id_), "attrs": {}, "parents": parents})
    for id_ in PLAIN_DOCS:
        if rng.random() < 0.2:
            continue
        attrs = {"owner": ref("User", rng.choice(PLAIN_USERS))} if rng.random() < 0.5 else {}
        parents = [uid("Group", rng.choice(GROUPS))] if rng.random() < 0.5 else []
        entities.append({"uid": uid("Doc", id_), "attrs": attrs, "parents": parents})
    return entities


def inline_docs(rng: random.Random) -> list[Json]:
    docs: list[Json] = []
    for id_ in INLINE_DOCS:
        if rng.random() < 0.5:
            continue
        attrs: Json = {}
        if rng.random() < 0.6:
            attrs["owner"] = ref("User", rng.choice(PLAIN_USERS))
        if rng.random() < 0.3:
            attrs["reviewers"] = [ref("User", rng.choice(PLAIN_USERS))]
        if rng.random() < 0.3:
            attrs["grp"] = ref("Group", rng.choice(GROUPS))
        if rng.random() < 0.3:
            attrs["meta"] = {"who": ref("User", rng.choice(PLAIN_USERS))}
        if rng.random() < 0.3:
            attrs["parentDoc"] = ref("Doc", rng.choice(PLAIN_DOCS + INLINE_DOCS))
        parents = [docs[-1]["uid"]] if docs and rng.random() < 0.3 else []
        docs.append({"uid": uid("Doc", id_), "attrs": attrs, "parents": parents})
    return docs


def plain_case(rng: random.Random) -> Case:
    inline = inline_docs(rng) if rng.random() < 0.5 else []
    resource = uid("Doc", rng.choice(PLAIN_DOCS + [d["uid"]["id"] for d in inline]))
    context: Json = {}
    if rng.random() < 0.3:
        context["d"] = ref("User", rng.choice(PLAIN_USERS), rng.randint(0, 1))
    if rng.random() < 0.3:
        context["ds"] = [ref("User", rng.choice(PLAIN_USERS))]
    principal = uid("User", rng.choice(PLAIN_USERS))
    action = uid("Action", rng.choice(["view", "del", "admin"]))
    return principal, action, resource, context, inline


def test_request_entities_beside_stored_ones_decide_as_cedar(tmp_path: Path) -> None:
    """Inline Docs (owners, reviewers, records of references, one under another, a parentDoc
    stored or inline) mixed with stored resources in one batch: each item, alone and batched,
    decides as Cedar over every stored entity and the request's own."""
    stores = make_store(
        tmp_path,
        PLAIN_POLICIES,
        settings='validation = "off"\nrequest_entity_types = ["Doc"]\n',
        entities=[],
    )
    rng = random.Random(1717)
    found: list[str] = []
    with served(stores) as (_, port, _log):
        for _ in range(60):
            entities = plain_entities(rng)
            version = replace_entities(port, PLAIN_UIDS, entities)
            cases = [plain_case(rng) for _ in range(10)]
            found += differences(port, PLAIN_POLICIES, entities, None, cases, version)
    assert found == []


# --- Enumerated entity types, tags and extension values in context ----------------------------

ENUM_SCHEMA = """
entity Color enum ["red", "blue"];
entity Group;
entity User in [Group] { fav: Color, boss?: User } tags User;
entity Doc { owner: User, color: Color, reviewers: Set<User> };
action view appliesTo { principal: [User, Color], resource: [Doc, Color],
  context: { c?: Color, when?: datetime, d?: duration, who?: User } };
action edit in [view] appliesTo { principal: [User], resource: [Doc] };
"""
ENUM_POLICIES = """
@id("p-fav") permit(principal is User, action, resource) when { principal.fav == Color::"red" };
@id("p-red") permit(principal == Color::"red", action, resource);
@id("f-blue") forbid(principal, action, resource is Doc) when { resource.color in Color::"blue" };
@id("f-tag") forbid(principal is User, action, resource) when { principal.hasTag("boss") &&
  principal.getTag("boss").fav == Color::"blue" };
@id("f-ctx") forbid(principal, action in Action::"view", resource) when { context has who &&
  context.who.fav == Color::"blue" };
@id("p-in-color") permit(principal in Color::"blue", action == Action::"view", resource);
@id("f-dur") forbid(principal, action, resource) when { context has d &&
  context.d > duration("2h") };
"""
ENUM_ENTITIES: list[Json] = [
    {
        "uid": uid("User", "a"),
        "attrs": {"fav": ref("Color", "red")},
        "parents": [],
        "tags": {"boss": ref("User", "b")},
    },
    {"uid": uid("User", "b"), "attrs": {"fav": ref("Color", "blue")}, "parents": []},
    {"uid": uid("User", "c"), "attrs": {"fav": ref("Color", "red", 1)}, "parents": []},
    {
        "uid": uid("Doc", "d"),
        "attrs": {
            "owner": ref("User", "a", 1),
            "color": ref("Color", "red", 1),
            "reviewers": [ref("User", "b", 2)],
        },
        "parents": [],
    },
    {
        "uid": uid("Doc", "e"),
        "attrs": {"owner": ref("User", "a"), "color": ref("Color", "blue"), "reviewers": []},
        "parents": [],
    },
]


def enum_cases() -> list[Case]:
    view, edit = uid("Action", "view"), uid("Action", "edit")
    user_c, doc_d = uid("User", "c"), uid("Doc", "d")
    contexts: list[Json] = [
        {},
        {"who": ref("User", "b")},
        {"who": ref("User", "b", 1)},
        {"who": ref("User", "b", 2)},
        {"c": "red"},
        {"c": ref("Color", "red", 1), "when": "2025-01-01T00:00:00Z", "d": "1h"},
        {"c": ref("Color", "green")},
        {"d": "3h"},
        {"d": {"__extn": {"fn": "duration", "arg": "3h"}}},
        {"when": {"__extn": {"fn": "datetime", "arg": "2025-01-01"}}},
    ]
    cases: list[Case] = [(user_c, view, doc_d, context, []) for context in contexts]
    cases += [
        (uid("User", "a"), view, doc_d, {}, []),
        (user_c, view, uid("Doc", "e"), {}, []),
        (user_c, edit, doc_d, {}, []),
        (uid("Color", "red"), view, doc_d, {}, []),
        (uid("Color", "blue"), view, uid("Color", "red"), {}, []),
        (uid("Color", "green"), view, doc_d, {}, []),
    ]
    return cases


def test_enum_types_tags_and_extension_context_decide_as_cedar(tmp_path: Path) -> None:
    """Cedar 4 entity enums (scopes, attributes, context, an undeclared id), entity-valued tags
    and duration/datetime context in both spellings, with strict validation and without."""
    for number, validation in enumerate(("strict", "off")):
        stores = make_store(
            tmp_path / str(number),
            ENUM_POLICIES,
            settings=f'validation = "{validation}"\n',
            schema=ENUM_SCHEMA,
            entities=ENUM_ENTITIES,
        )
        with served(stores) as (_, port, _log):
            cases = enum_cases()
            assert differences(port, ENUM_POLICIES, ENUM_ENTITIES, ENUM_SCHEMA, cases) == []
            # Not vacuous: the forbids through enums, tags and context fire, the enum scope
            # allows, and an undeclared enum id is a bad request.
            answers = verdict_answers(port, [request(case) for case in cases])
            assert answers[1] == ["DENY", "DENY"]  # context.who.fav is blue
            assert answers[-3] == ["ALLOW", "ALLOW"]  # principal == Color::"red"
            assert answers[-1] == ["INVALID_ARGUMENT", "INVALID_ARGUMENT"]


# --- A JSON schema: cross-namespace action groups, common context, enum, tags -----------------

JSON_SCHEMA: Json = {
    "Base": {"entityTypes": {}, "actions": {"all": {}}},
    "App": {
        "commonTypes": {
            "Ctx": {
                "type": "Record",
                "attributes": {
                    "who": {"type": "EntityOrCommon", "name": "User", "required": False},
                    "n": {"type": "EntityOrCommon", "name": "Long", "required": False},
                },
            }
        },
        "entityTypes": {
            "Kind": {"enum": ["a", "b"]},
            "Group": {"memberOfTypes": ["Group"]},
            "User": {
                "memberOfTypes": ["Group"],
                "shape": {
                    "type": "Record",
                    "attributes": {
                        "boss": {"type": "EntityOrCommon", "name": "User", "required": False},
                        "kind": {"type": "Entity", "name": "Kind", "required": False},
                    },
                },
                "tags": {"type": "EntityOrCommon", "name": "User"},
            },
            "Doc": {
                "memberOfTypes": ["Group"],
                "shape": {
                    "type": "Record",
                    "attributes": {"owner": {"type": "Entity", "name": "User", "required": False}},
                },
            },
        },
        "actions": {
            "view": {
                "memberOf": [{"type": "Base::Action", "id": "all"}],
                "appliesTo": {
                    "principalTypes": ["User"],
                    "resourceTypes": ["Doc", "Group"],
                    "context": {"type": "Ctx"},
                },
            },
            "edit": {
                "memberOf": [{"id": "view"}],
                "appliesTo": {
                    "principalTypes": ["User"],
                    "resourceTypes": ["Doc"],
                    "context": {"type": "Ctx"},
                },
            },
        },
    },
}
JSON_STATIC = """
@id("p-all") permit(principal, action in Base::Action::"all", resource);
@id("f-unless") forbid(principal, action, resource) unless { !(context has who) ||
  !(context.who has boss) || !(context.who.boss in App::Group::"bad") };
@id("f-tag") forbid(principal, action, resource) when { principal.hasTag("sec") &&
  principal.getTag("sec") in App::Group::"bad" };
@id("f-kind") forbid(principal, action, resource) when { principal has kind &&
  principal.kind == App::Kind::"b" && resource has owner && resource.owner has kind &&
  resource.owner.kind == App::Kind::"a" };
"""
JSON_TEMPLATE = """
@id("t-isin") forbid(principal is App::User in ?principal, action == App::Action::"edit",
  resource is App::Doc in ?resource);
"""
JSON_LINKS = [
    {
        "id": "l1",
        "template": "t-isin",
        "values": {"?principal": 'App::Group::"g"', "?resource": 'App::Group::"r"'},
    }
]
JSON_ORACLE = JSON_STATIC + (
    '@id("l1") forbid(principal is App::User in App::Group::"g", '
    'action == App::Action::"edit", resource is App::Doc in App::Group::"r");\n'
)


def app(type_: str, id_: str) -> Uid:
    return uid(f"App::{type_}", id_)


JSON_ENTITIES: list[Json] = [
    {
        "uid": app("User", "u"),
        "attrs": {"boss": app("User", "b"), "kind": app("Kind", "b")},
        "parents": [app("Group", "g")],
        "tags": {"sec": ["App::User", "s"]},
    },
    {"uid": app("User", "b"), "attrs": {}, "parents": [app("Group", "bad")]},
    {"uid": app("User", "s"), "attrs": {}, "parents": [app("Group", "x")]},
    {"uid": app("User", "s2"), "attrs": {}, "parents": [app("Group", "bad")]},
    {
        "uid": app("User", "v"),
        "attrs": {},
        "parents": [],
        "tags": {"sec": {"__entity": app("User", "s2")}},
    },
    {"uid": app("User", "k"), "attrs": {"kind": app("Kind", "a")}, "parents": []},
    {"uid": app("Doc", "d"), "attrs": {"owner": app("User", "k")}, "parents": [app("Group", "r")]},
    {"uid": app("Doc", "e"), "attrs": {}, "parents": []},
    {"uid": app("Group", "r"), "attrs": {}, "parents": []},
]


def test_a_json_schema_with_cross_namespace_action_groups_decides_as_cedar(
    tmp_path: Path,
) -> None:
    """``App::Action::"edit"`` in ``"view"`` in ``Base::Action::"all"`` selects the permit
    scoped on the other namespace's group; ``unless``, a link of ``is ... in ?principal`` and
    ``is ... in ?resource``, tags and enums read through a JSON schema's common types."""
    stores = make_store(tmp_path, JSON_STATIC + JSON_TEMPLATE, entities=JSON_ENTITIES)
    stores.joinpath("s", "links.json").write_text(json.dumps(JSON_LINKS))
    schema = json.dumps(JSON_SCHEMA)
    stores.joinpath("s", "schema.cedarschema.json").write_text(schema)
    contexts: list[Json] = [{}, {"who": app("User", "u")}, {"who": ["App::User", "k"], "n": 3}]
    cases: list[Case] = [
        (app("User", p), app("Action", a), app("Doc", r), context, [])
        for p in ("u", "b", "s", "v", "k", "zz")
        for a in ("view", "edit")
        for r in ("d", "e")
        for context in contexts
    ]
    with served(stores) as (_, port, _log):
        assert differences(port, JSON_ORACLE, JSON_ENTITIES, schema, cases) == []
        answers = verdict_answers(port, [request(case) for case in cases])
    verdicts = [answer[0] for answer in answers]
    assert verdicts.count("ALLOW") > 10
    assert verdicts.count("DENY") > 10


# --- Valid Cedar entity data: accepted when Cedar accepts it, followed by the slice -----------


def e(type_: str, id_: str, attrs: Json | None = None, **more: Any) -> Json:
    entity: Json = {"uid": uid(f"Org::{type_}", id_), "attrs": attrs or {}, "parents": []}
    entity.update(more)
    return entity


ENTITY_FORMS: dict[str, list[Json]] = {
    "tag as pair": [e("User", "a", tags={"boss": ["Org::User", "b"]})],
    "attribute as pair": [e("User", "a", {"manager": ["Org::User", "b"]})],
    "implicit extension strings": [e("User", "a", {"ip": "10.0.0.1", "since": "2025-01-01"})],
    "__extn with args": [
        e(
            "User",
            "a",
            {
                "since": {
                    "__extn": {
                        "fn": "offset",
                        "args": [
                            {"__extn": {"fn": "datetime", "arg": "2025-01-01"}},
                            {"__extn": {"fn": "duration", "arg": "1h"}},
                        ],
                    }
                }
            },
        )
    ],
    "enum attribute as record": [e("User", "a", {"level": {"type": "Org::Level", "id": "high"}})],
    "enum entity": [e("Level", "high")],
    "action entity as the schema has it": [
        e("Action", "view", parents=[uid("Org::Action", "all")])
    ],
    "uid and parents as escapes": [
        {
            "uid": ref("Org::User", "a"),
            "attrs": {},
            "parents": [ref("Org::Team", "t")],
        }
    ],
    "nested record of references": [
        e("User", "a", {"profile": {"team": ["Org::Team", "t"], "lead": ref("Org::User", "b")}})
    ],
    "set of pairs": [e("User", "a", {"teams": [["Org::Team", "t"], ["Org::Team", "u"]]})],
    "empty tags": [e("Team", "t", tags={})],
    "odd id": [e("User", "é\u2028\n\x00")],
    "duplicate parents": [e("User", "a", parents=[uid("Org::Team", "t"), ref("Org::Team", "t")])],
    "record-form tag with extra key": [
        e("Doc", "d", tags={"grp": {"type": "Org::Team", "id": "t", "note": 1}})
    ],
    "enum id the schema lacks": [e("Level", "mid")],
    "action unlike the schema's": [e("Action", "share", parents=[uid("Org::Action", "view")])],
    "wrong attribute type": [e("User", "a", {"suspended": "yes"})],
}
PLAIN_FORMS: dict[str, list[Json]] = {
    "empty attribute name": [{"uid": uid("U", "a"), "attrs": {"": 1}, "parents": []}],
    "nested empty sets": [{"uid": uid("U", "a"), "attrs": {"x": [[]]}, "parents": []}],
    "type named principal": [{"uid": uid("principal", "v"), "attrs": {}, "parents": []}],
    "type named Set": [{"uid": uid("Set", "v"), "attrs": {}, "parents": []}],
    "type named Bool": [{"uid": uid("Bool", "v"), "attrs": {}, "parents": []}],
    "parent of type Action": [{"uid": uid("U", "a"), "attrs": {}, "parents": [uid("Action", "v")]}],
    "i64 minimum": [{"uid": uid("U", "a"), "attrs": {"x": -(2**63)}, "parents": []}],
    "past i64": [{"uid": uid("U", "a"), "attrs": {"x": 2**63}, "parents": []}],
    "unknown extension": [
        {
            "uid": uid("U", "a"),
            "attrs": {"x": {"__extn": {"fn": "nope", "arg": "1"}}},
            "parents": [],
        }
    ],
}


def accepted(port: int, entities: list[Json]) -> bool:
    with fresh_channel(port) as channel:
        stub = epb_grpc.EntityServiceStub(channel)
        put = epb.PutEntitiesRequest(policy_store_id="s", entities_json=json.dumps(entities))
        try:
            stub.PutEntities(put, timeout=10)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:  # a refusal, never a failure
                raise
            return False
        return True


def cedar_accepts(entities: list[Json], schema: str | None) -> bool:
    try:
        parsed_schema = cedarpy.Schema.from_str(schema) if schema else None
        cedarpy.Entities.from_json_str(json.dumps(entities), parsed_schema)
    except Exception:  # cedarpy raises several types; any means "refused"
        return False
    return True


def test_entity_writes_are_accepted_exactly_when_cedar_accepts_them(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """Each form written alone through PutEntities on Redis (the rich schema) and on the memory
    store (no schema): accepted exactly when Cedar accepts it, refused as INVALID_ARGUMENT."""
    stores = rich_store(tmp_path / "redis", 'validation = "off"\nentities_source = "writes"\n')
    found = []
    with served(stores, "--redis-url", redis.url) as (_, port, _log):
        for name, entities in ENTITY_FORMS.items():
            if accepted(port, entities) != cedar_accepts(entities, RICH_SCHEMA):
                found.append(name)
    plain = make_store(tmp_path / "memory", "permit(principal, action, resource);", entities=[])
    with served(plain) as (_, port, _log):
        for name, entities in PLAIN_FORMS.items():
            if accepted(port, entities) != cedar_accepts(entities, None):
                found.append(name)
        # Kept on purpose: two identical copies of one entity in a write are refused by name
        # (Cedar accepts identical duplicates; docs/redis.md, duplicate uids in the call).
        twice = [{"uid": uid("U", "a"), "attrs": {}, "parents": []}] * 2
        assert cedar_accepts(twice, None)
        assert not accepted(port, twice)
    assert found == []


LOADED: list[Json] = [
    e(
        "User",
        "u0",
        {"manager": ["Org::User", "m"], "profile": {"team": ["Org::Team", "t2"]}},
        tags={"boss": {"type": "Org::User", "id": "boss"}},
    ),
    e("User", "m", {"manager": {"type": "Org::User", "id": "mm"}}),
    e("User", "mm", {"suspended": True}),
    e("User", "boss", {"suspended": True}),
    e("User", "u1", {"teams": [["Org::Team", "t1"]]}),
    e("User", "u2", {"profile": {"team": ["Org::Team", "t2"], "lead": ["Org::User", "boss"]}}),
    e("Team", "t2", parents=[uid("Org::Team", "blocked")]),
    e("Doc", "d0", {"locked": True}, parents=[uid("Org::Team", "t1")]),
    e("Doc", "d1", {"owner": ["Org::User", "boss"]}, tags={"grp": ["Org::Team", "t2"]}),
    e("Doc", "d2"),
]


def test_references_loaded_by_entities_load_are_followed_on_redis(
    tmp_path: Path, redis: RedisProcess
) -> None:
    """An entities.json whose references are pairs and records (attributes, nested records,
    sets, tags) loaded by ``verdict entities load``: each forbid reading through one fires as
    Cedar's does, on a cache miss and again on a hit."""
    stores = rich_store(tmp_path, 'validation = "off"\n')
    stores.joinpath("s", "entities.json").write_text(json.dumps(LOADED))
    load = [sys.executable, "-m", "verdict", "entities", "load", "--stores", str(stores)]
    done = subprocess.run(
        [*load, "--redis-url", redis.url], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    view = uid("Org::Action", "view")
    cases: list[Case] = [
        (uid("Org::User", p), view, uid("Org::Doc", r), {}, [])
        for p in ("u0", "u1", "u2", "m", "boss")
        for r in ("d0", "d1", "d2")
    ]
    cases.append(
        (
            uid("Org::User", "m"),
            view,
            uid("Org::Doc", "d2"),
            {"rec": {"who": ["Org::User", "mm"]}},
            [],
        )
    )
    with served(stores, "--redis-url", redis.url) as (_, port, _log):
        for _ in range(2):  # a miss, then the cache
            assert differences(port, RICH_ORACLE, LOADED, RICH_SCHEMA, cases) == []
        answers = verdict_answers(port, [request(case) for case in cases])
    # u0 (manager's manager suspended, tag boss suspended, team under blocked) and u2 (profile
    # lead suspended) are denied everything; u1 is denied the locked Doc in its teams.
    assert all(a == ["DENY", "DENY"] for a in answers[0:3] + answers[6:9])
    assert answers[3][0] == "DENY"
    assert answers[5][0] == "ALLOW"
    assert answers[-1] == ["DENY", "DENY"]

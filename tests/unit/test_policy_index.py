"""Unit tests of the policy index: scopes read from Cedar's JSON, which named uids are read,
selections, links and the bounded cache of policy sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stores import write_store
from verdict import cedar
from verdict.model import EntityUid, JsonObject
from verdict.policy.index import (
    PolicyIndex,
    action_parents,
    link_entry,
    static_entry,
    template_part,
)
from verdict.policy.loader import load_store
from verdict.policy.policy_sets import PolicySetCache, SelectionCacheLimits
from verdict.policy.references import read_uids
from verdict.policy.scope import Constraint, Op, read_scope


def est(text: str) -> JsonObject:
    """Cedar's JSON form of one policy or template."""
    document = cedar.policy_to_json(text)
    return dict(next(iter({**document["staticPolicies"], **document["templates"]}.values())))


def uid(text: str) -> EntityUid:
    """``Type::"id"`` as a uid."""
    type_, _, rest = text.partition("::")
    return EntityUid(type_, rest.strip('"'))


def test_read_uids_are_only_the_dereferenced_ones() -> None:
    """Uids under ``.``, has, tags, the left of ``in``/``is in``, and flowing there through
    records and ``if`` are read; uids compared, in sets or on the right of ``in`` are not."""
    policy = est(
        'permit(principal in Group::"scope", action in [Action::"a"], resource) when {'
        ' User::"x".name == "a" && Group::"g" in principal && principal in [Group::"a"] &&'
        ' {a: User::"r"}.a has b && (if true then User::"i" else User::"j").k &&'
        ' principal is User in Group::"z" && [User::"s"].contains(principal) &&'
        ' User::"t".getTag("k") && User::"u".hasTag("k") && principal == User::"eq" &&'
        ' User::"w" is User in Group::"q" && ip("1.2.3.4").isIpv4() };'
    )
    expected = {'User::"x"', 'Group::"g"', 'User::"r"', 'User::"i"', 'User::"j"'}
    expected |= {'User::"t"', 'User::"u"', 'User::"w"'}
    assert read_uids(policy) == {uid(t) for t in expected}


def test_scopes_of_every_kind_are_read() -> None:
    """==, in, is, is-in, action lists and slots (filled from a link) become constraints."""
    policy = est(
        "permit(principal is User in ?principal,"
        ' action in [Action::"a", Action::"b"], resource == ?resource);'
    )
    scope = read_scope(policy, {"?principal": uid('Group::"g"'), "?resource": uid('Doc::"d"')})
    assert scope.principal == Constraint(Op.IS_IN, (uid('Group::"g"'),), "User")
    assert scope.action == Constraint(Op.IN, (uid('Action::"a"'), uid('Action::"b"')))
    assert scope.resource == Constraint(Op.EQ, (uid('Doc::"d"'),))
    unfilled = read_scope(policy, {})
    assert unfilled.principal.op is Op.ALL  # an unknown shape selects more, never less


def test_selection_uses_ancestors_and_schema_action_groups() -> None:
    """A request selects the policies whose scope its principal, action (schema groups
    included) and resource match through their ancestors, and the unscoped ones."""
    schema = cedar.parse_schema(
        "entity G; entity U in [G]; entity D; action grp; action read in [grp] "
        "appliesTo { principal: [U], resource: [D] };",
        is_json=False,
    )
    policies = {
        "member": 'permit(principal in G::"g", action, resource);',
        "other-group": 'permit(principal in G::"h", action, resource);',
        "grouped-action": 'permit(principal, action in Action::"grp", resource is D);',
        "other-action": 'permit(principal, action == Action::"write", resource);',
        "global": "forbid(principal, action, resource) when { context.x };",
        "exact": 'permit(principal == U::"u", action, resource == D::"e");',
    }
    entries = [static_entry(pid, est(text)) for pid, text in policies.items()]
    index = PolicyIndex(entries, {}, action_parents(schema), SelectionCacheLimits())
    request = (uid('U::"u"'), uid('Action::"read"'), uid('D::"d"'))
    key = index.select([request], {uid('U::"u"'): [uid('G::"g"')]})
    assert [entries[n].id for n in key] == ["member", "grouped-action", "global"]
    missing = index.select([request], {})  # the principal is not stored: no ancestors
    assert [entries[n].id for n in missing] == ["grouped-action", "global"]
    assert index.policy_set(key) is index.policy_set(key)  # built once


def test_links_fill_their_template_slots() -> None:
    """A link's scope is its template's with the slots filled; a link of an unknown template,
    or one that leaves a slot empty, is refused."""
    templates = {"t": est("permit(principal in ?principal, action, resource);")}
    link = {"templateId": "t", "newId": "l", "values": {"?principal": {"type": "G", "id": "g"}}}
    entry = link_entry(link, templates)
    assert entry.scope.principal == Constraint(Op.IN, (uid('G::"g"'),))
    index = PolicyIndex(
        [entry], {"t": template_part("t", templates["t"])}, {}, SelectionCacheLimits()
    )
    key = index.select(
        [(uid('U::"u"'), uid('Action::"a"'), uid('D::"d"'))], {uid('U::"u"'): [uid('G::"g"')]}
    )
    assert key == (0,)
    assert index.policy_set(key).ids == {"l", "t"}
    with pytest.raises(ValueError, match="no template"):
        link_entry({**link, "templateId": "x"}, templates)
    with pytest.raises(ValueError, match="slots"):
        link_entry({**link, "values": {}}, templates)


def test_ids_must_be_unique_across_policies_templates_and_links() -> None:
    """A link whose id is a static policy's id is refused when the index is built."""
    templates = {"t": est("permit(principal == ?principal, action, resource);")}
    link = {"templateId": "t", "newId": "p", "values": {"?principal": {"type": "U", "id": "u"}}}
    entries = [
        static_entry("p", est("permit(principal, action, resource);")),
        link_entry(link, templates),
    ]
    with pytest.raises(ValueError, match="unique"):
        PolicyIndex(entries, {"t": template_part("t", templates["t"])}, {}, SelectionCacheLimits())


def test_policy_set_cache_is_bounded_by_sets_and_policies() -> None:
    """The least recently used sets are evicted past either bound; an oversized set is built
    but never kept."""
    cache = PolicySetCache(SelectionCacheLimits(max_sets=2, max_policies=4))
    builds: list[tuple[int, ...]] = []

    def build(key: tuple[int, ...]) -> object:
        builds.append(key)
        return key

    def get(key: tuple[int, ...]) -> object:
        return cache.get(key, lambda: build(key))

    get((1,)), get((2,)), get((1,)), get((3,))  # (2,) is the least recently used
    assert len(cache) == 2
    get((1,))
    assert builds == [(1,), (2,), (3,)]
    get((4, 5, 6, 7))  # 1 + 1 + 4 policies > 4: evicts down to the bound
    assert len(cache) == 1
    get((1, 2, 3, 4, 5))
    get((1, 2, 3, 4, 5))
    assert builds.count((1, 2, 3, 4, 5)) == 2


def test_loader_keeps_named_uids_and_roots_only_read_ones(tmp_path: Path) -> None:
    """The loader lists every named uid (request-entity rules) and, as slice roots, only the
    uids conditions read."""
    root = write_store(
        tmp_path,
        "s",
        {
            "p.cedar": 'permit(principal in Group::"g", action, resource)'
            ' when { Doc::"d".public && principal != User::"x" };'
        },
    )
    store = load_store(root)
    assert store.literal_uids == {uid('Group::"g"'), uid('Doc::"d"'), uid('User::"x"')}
    assert store.read_uids == {uid('Doc::"d"')}

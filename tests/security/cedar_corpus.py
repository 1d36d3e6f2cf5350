"""Two policy stores for differential testing: one with a namespaced schema, one without."""

from __future__ import annotations

TYPED_SCHEMA = """
namespace Bank {
  entity Group in [Group];
  entity User in [Group] {
    level: Long,
    name: String,
    manager?: User,
    since?: datetime,
  } tags String;
  entity Doc {
    owner: User,
    name: String,
    viewers: Set<User>,
    limit?: decimal,
    net?: ipaddr,
  };
  action readers;
  action read in [readers] appliesTo {
    principal: [User],
    resource: [Doc],
    context: { mfa?: Bool, n?: Long, d?: decimal, delegate?: User, ip?: ipaddr, t?: datetime },
  };
  action write appliesTo {
    principal: [User],
    resource: [Doc],
    context: { mfa?: Bool, n?: Long, d?: decimal, delegate?: User, ip?: ipaddr, t?: datetime },
  };
}
"""

TYPED_POLICIES = [
    '@id("read-level") permit(principal, action == Bank::Action::"read", resource)'
    " when { principal.level > 3 };",
    '@id("readers-mfa") permit(principal, action in Bank::Action::"readers", resource)'
    " when { context has mfa && context.mfa };",
    '@id("owner-write") permit(principal, action == Bank::Action::"write", resource)'
    " when { resource.owner == principal };",
    '@id("blocked") forbid(principal in Bank::Group::"blocked", action, resource);',
    '@id("owner-blocked") forbid(principal, action, resource)'
    ' when { resource.owner in Bank::Group::"blocked" };',
    '@id("delegate-blocked") forbid(principal, action, resource)'
    ' when { context has delegate && context.delegate in Bank::Group::"blocked" };',
    '@id("manager-level") forbid(principal, action, resource)'
    " when { principal has manager && principal.manager.level < 0 };",
    '@id("limit") forbid(principal, action, resource)'
    " when { resource has limit && context has d && resource.limit.lessThan(context.d) };",
    '@id("tag-admin") permit(principal, action, resource)'
    ' when { principal.hasTag("role") && principal.getTag("role") == "admin" };',
    '@id("viewers") permit(principal, action == Bank::Action::"read", resource)'
    " when { resource.viewers.contains(principal) };",
    '@id("overflow") forbid(principal, action, resource)'
    " when { context has n && context.n * 2 > 9000 };",
    '@id("empty-id") permit(principal == Bank::User::"", action, resource);',
    '@id("name-like") forbid(principal, action, resource) when { resource.name like "*secret*" };',
    '@id("net") forbid(principal, action, resource)'
    " when { resource has net && resource.net.isLoopback() };",
    '@id("since") forbid(principal, action, resource)'
    " when { principal has since && context has t && principal.since > context.t };",
    '@id("odd-id") permit(principal == Bank::User::"a::\\"b\\"\\n", action, resource);',
]

PLAIN_POLICIES = [
    '@id("p-level") permit(principal, action == Action::"read", resource)'
    " when { principal.level > 3 };",
    '@id("p-blocked") forbid(principal in Group::"blocked", action, resource);',
    '@id("p-admins") permit(principal in Group::"admins", action, resource);',
    '@id("p-owner") permit(principal, action, resource)'
    " when { resource has owner && resource.owner == principal };",
    '@id("p-owner-blocked") forbid(principal, action, resource)'
    ' when { resource has owner && resource.owner in Group::"blocked" };',
    '@id("p-delegate") forbid(principal, action, resource)'
    ' when { context has delegate && context.delegate in Group::"blocked" };',
    '@id("p-readers") permit(principal, action in Action::"readers", resource);',
    '@id("p-tags") permit(principal, action, resource)'
    ' when { principal.hasTag("k") && principal.getTag("k") == "v" };',
    '@id("p-dec") forbid(principal, action, resource)'
    ' when { context has d && context.d.lessThan(decimal("1.5")) };',
    '@id("p-thing") permit(principal is A::B::Thing, action, resource);',
    '@id("p-empty") permit(principal, action, resource == Doc::"");',
    '@id("p-deep") forbid(principal, action, resource) when { principal has manager'
    ' && principal.manager has manager && principal.manager.manager in Group::"blocked" };',
    '@id("p-long") forbid(principal, action, resource)'
    " when { context has n && context.n + 1 > 0 };",
    '@id("p-set") permit(principal, action, resource)'
    " when { resource has viewers && resource.viewers.contains(principal) };",
    '@id("p-ip") forbid(principal, action, resource)'
    " when { context has ip && context.ip.isLoopback() };",
    '@id("p-like") permit(principal, action, resource)'
    ' when { principal has name && principal.name like "*\\"*" };',
    '@id("p-time") forbid(principal, action, resource)'
    ' when { context has t && context.t < datetime("2020-01-01") };',
    '@id("p-flag") forbid(principal, action, resource) when { context.flag };',
]

TYPED_STORE = {
    "schema.cedarschema": TYPED_SCHEMA,
    "policies.cedar": "\n".join(TYPED_POLICIES) + "\n",
    "store.toml": 'validation = "strict"\non_evaluation_error = "deny"\n',
}
PLAIN_STORE = {
    "policies.cedar": "\n".join(PLAIN_POLICIES) + "\n",
    "store.toml": 'validation = "off"\non_evaluation_error = "deny"\n',
}

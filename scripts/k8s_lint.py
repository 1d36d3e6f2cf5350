"""make k8s-lint: render each k8s/ overlay with kustomize and validate every object offline.

Built-in kinds go through ``kubernetes-validate --strict`` against the pinned Kubernetes version
(unknown fields fail). kubernetes-validate has no schema for custom resources and only warns
about them, so a warning fails here too; the custom kinds the manifests use are validated with
jsonschema against ``k8s/schemas/<kind>-<group>-<version>.json`` (strict as well). Then the
checks no schema can make: every policies ConfigMap key is mounted, at the path it names.

Usage: python scripts/k8s_lint.py [--kubernetes-version 1.33.0] [overlay ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "k8s" / "overlays"
SCHEMAS = ROOT / "k8s" / "schemas"
BIN = Path(sys.executable).parent  # kubectl and kubernetes-validate of the project's venv
KUBERNETES_VERSION = "1.33.0"  # the Makefile passes it too
POLICIES_CONFIGMAP = "verdict-policies"


def render(overlay: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` (kustomize built into kubectl) makes of an overlay."""
    done = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise SystemExit(f"k8s-lint: kustomize failed for {overlay}:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def custom_schema(obj: dict[str, Any]) -> Path:
    """Where the schema of a custom resource's kind lives."""
    group, _, version = obj["apiVersion"].rpartition("/")
    return SCHEMAS / f"{obj['kind'].lower()}-{group}-{version}.json"


def is_builtin(obj: dict[str, Any]) -> bool:
    """Kinds of the Kubernetes API itself (group-less or *.k8s.io groups, apps, policy, ...)."""
    group = obj["apiVersion"].rpartition("/")[0]
    return group in ("", "apps", "autoscaling", "batch", "policy") or group.endswith(".k8s.io")


def validate_builtin(name: str, objects: list[dict[str, Any]], version: str) -> list[str]:
    """kubernetes-validate --strict over the objects; any ERROR, WARN or FATAL is a problem."""
    if not objects:
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"{name}-") as rendered:
        yaml.safe_dump_all(objects, rendered)
        rendered.flush()
        argv = [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version]
        done = subprocess.run(
            [*argv, rendered.name], capture_output=True, text=True, check=False, timeout=300
        )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    problems = [f"{name}: {line}" for line in lines]
    if done.returncode != 0 and not problems:
        problems.append(f"{name}: kubernetes-validate exited {done.returncode}")
    return problems


def validate_custom(name: str, obj: dict[str, Any]) -> list[str]:
    """jsonschema against the kind's schema in k8s/schemas; no schema is a problem."""
    path = custom_schema(obj)
    label = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
    if not path.is_file():
        return [f"{label}: no schema for {obj['apiVersion']} {obj['kind']} ({path} missing)"]
    validator = jsonschema.Draft202012Validator(json.loads(path.read_text()))
    return [
        f"{label}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


def policy_mount_problems(name: str, objects: list[dict[str, Any]]) -> list[str]:
    """Each pod volume of the policies ConfigMap projects every key, each at the path it names
    (``__`` for ``/``), and nothing else; no container mounts it with subPath."""
    keys = {
        key
        for obj in objects
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == POLICIES_CONFIGMAP
        for key in obj.get("data", {})
    }
    problems = [] if keys else [f"{name}: no ConfigMap {POLICIES_CONFIGMAP}"]
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod is None:
            continue
        for volume in pod.get("volumes", []):
            source = volume.get("configMap", {})
            if source.get("name") != POLICIES_CONFIGMAP:
                continue
            items = {item["key"]: item["path"] for item in source.get("items", [])}
            label = f"{name}: {obj['kind']}/{obj['metadata']['name']} volume {volume['name']}"
            if set(items) != keys:
                missing, extra = sorted(keys - set(items)), sorted(set(items) - keys)
                problems.append(f"{label}: keys not mounted {missing}, items of no key {extra}")
            problems += [
                f"{label}: key {key} mounted at {path}, not {key.replace('__', '/')}"
                for key, path in items.items()
                if path != key.replace("__", "/")
            ]
            for container in pod.get("containers", []):
                for mount in container.get("volumeMounts", []):
                    if mount["name"] == volume["name"] and "subPath" in mount:
                        problems.append(f"{label}: subPath mount never sees a ConfigMap update")
    return problems


def lint(overlay: Path, version: str) -> list[str]:
    """Every problem of one overlay."""
    objects = render(overlay)
    name = overlay.name
    builtin = [obj for obj in objects if is_builtin(obj)]
    problems = validate_builtin(name, builtin, version)
    for obj in objects:
        if not is_builtin(obj):
            problems += validate_custom(name, obj)
    problems += policy_mount_problems(name, objects)
    print(f"k8s-lint: {name}: {len(objects)} objects rendered, {len(problems)} problem(s)")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Lint the named overlays (default: all of k8s/overlays); exit 1 on any problem."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    parser.add_argument("overlays", nargs="*", type=Path)
    args = parser.parse_args(argv)
    overlays = args.overlays or sorted(p for p in OVERLAYS.iterdir() if p.is_dir())
    problems = [p for overlay in overlays for p in lint(overlay, args.kubernetes_version)]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

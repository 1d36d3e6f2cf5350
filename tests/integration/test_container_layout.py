"""The container image's layout, built without Docker (none on these machines) from the
Dockerfile itself: its build context and COPY lines, a wheel installed into a fresh venv with
constraints.txt, the runtime ENV, CMD and HEALTHCHECK, served from an empty working folder."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.cases import lending_cases
from tests.conftest import POLICIES, ROOT
from tests.dockerfile import Stage, context_files, exec_form, healthcheck_argv, stages
from tests.processes import free_port
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict.client import VerdictClient, build_request

BUILDER, RUNTIME = stages()
VENV, POLICY_MOUNT, TMP = "/opt/verdict", "/etc/verdict/policies", "/tmp"
READY_WITHIN = 90.0  # seconds for the workers to load policies and report SERVING
PIP_SECONDS = 240  # bound on each pip step (PyPI or the local wheel cache)


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a build step; its stdout (its output shown when it fails)."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=PIP_SECONDS
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build(tmp: Path) -> Path:
    """The builder stage: the context as .dockerignore leaves it, its COPY lines, then the
    steps of its RUN (venv, wheel, install with the constraints, pip check). The venv."""
    context = set(context_files())
    workdir = tmp / "build"
    for sources, destination in BUILDER.copies():
        for source in sources:
            picked = [f for f in context if f == source or f.startswith(source.rstrip("/") + "/")]
            assert picked, f"COPY {source}: not in the build context"
            for name in picked:
                # "src/" copies the folder's content; a file lands in the destination folder.
                inside = name[len(source) :] if source.endswith("/") else Path(name).name
                target = workdir / destination / inside
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target)
    venv = tmp / "opt-verdict"
    run(sys.executable, "-m", "venv", venv)
    pip = venv / "bin" / "pip"
    run(pip, "wheel", "--no-deps", "--wheel-dir", tmp / "wheels", ".", cwd=workdir)
    (wheel,) = (tmp / "wheels").glob("verdict-*.whl")
    run(pip, "install", "--constraint", "constraints.txt", wheel, cwd=workdir)
    run(pip, "check")
    return venv


def canonical(requirement: str) -> str:
    """``name==version`` with the name normalised as PyPI does."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}"


def pinned() -> set[str]:
    """The requirements constraints.txt pins."""
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    return {canonical(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def image_env(stage: Stage, places: dict[str, Path], home: Path) -> dict[str, str]:
    """The runtime stage's ENV with the image's folders moved to ``places``, over a bare
    environment (the base image's PATH and locale, the user's home that does not exist)."""
    base = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(home)}
    env = dict(base)
    # One pass: a replacement (under /tmp itself) must not be replaced again.
    names = "|".join(re.escape(p) for p in places)
    image_path = re.compile(rf"(?<![^:])({names})(?=/|:|$)")
    for key, value in stage.env().items():
        moved = image_path.sub(lambda m: str(places[m.group(1)]), value)
        env[key] = moved.replace("$PATH", base["PATH"])
    return env


def files_under(folder: Path) -> set[str]:
    """Every file and folder below ``folder`` (relative paths)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def health(address: str) -> int:
    """One grpc.health.v1 Check of the whole server (the status, or -1 if the call failed)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError:
            return -1
    status: int = reply.status
    return status


@contextmanager
def serving(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[None]:
    """The image's process, stopped with SIGTERM (as `docker stop` does) after the block; it
    must exit 0."""
    with log.open("w") as stderr:
        process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    try:
        yield
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_serving(address: str, log: Path) -> None:
    """Until the health port says SERVING (bounded)."""
    deadline = time.monotonic() + READY_WITHIN
    while health(address) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, f"not SERVING:\n{log.read_text()}"
        time.sleep(0.2)


def with_loopback(argv: list[str], ports: dict[str, int]) -> list[str]:
    """``argv`` with each listen flag's ``0.0.0.0:PORT`` turned into a free loopback port."""
    out = list(argv)
    for flag, port in ports.items():
        index = out.index(flag) + 1
        assert out[index].startswith("0.0.0.0:"), out[index]
        out[index] = f"127.0.0.1:{port}"
    return out


@pytest.mark.timeout(600)
def test_image_layout_installs_and_serves(tmp_path: Path) -> None:
    """The wheel installs at exactly the pinned versions; the image's command serves the
    policies from the fixed path with the image's environment, writes nothing outside its
    temporary folder, and `verdict healthcheck` exits 0 against it and 1 where nobody listens."""
    venv = build(tmp_path)
    frozen = run(venv / "bin" / "pip", "freeze", "--exclude", "verdict").split()
    assert {canonical(r) for r in frozen} == pinned()
    installed = run(venv / "bin" / "python", "-c", "import verdict; print(verdict.__file__)")
    assert Path(installed.strip()).is_relative_to(venv), "served from the source tree"

    policies, temporary, root = tmp_path / "policies", tmp_path / "tmp", tmp_path / "root"
    shutil.copytree(POLICIES, policies)
    temporary.mkdir()
    root.mkdir(mode=0o555)
    home = tmp_path / "nonexistent"
    places = {VENV: venv, POLICY_MOUNT: policies, TMP: temporary}
    env = image_env(RUNTIME, places, home)
    entrypoint = exec_form(RUNTIME.one("ENTRYPOINT").args)
    program = shutil.which(entrypoint[0], path=env["PATH"])
    assert program is not None
    assert Path(program).is_relative_to(venv)

    ports = {f: free_port() for f in ("--listen", "--health-listen", "--metrics-listen")}
    command = with_loopback(exec_form(RUNTIME.one("CMD").args), ports)
    probe = healthcheck_argv(RUNTIME)
    probe[probe.index("--server") + 1] = f"127.0.0.1:{ports['--health-listen']}"
    before = {folder: files_under(folder) for folder in (venv, policies)}
    log = tmp_path / "serve.log"

    with serving([program, *entrypoint[1:], *command], env, root, log):
        wait_serving(f"127.0.0.1:{ports['--health-listen']}", log)
        check = subprocess.run(probe, env=env, cwd=root, capture_output=True, text=True)
        assert (check.returncode, check.stderr) == (0, "")

        case = lending_cases()[0]
        with VerdictClient(f"127.0.0.1:{ports['--listen']}", timeout=10) as client:
            reply = client.send(
                build_request(case.principal, case.action, case.resource, context=case.context)
            )
        expected = pb.DECISION_ALLOW if case.expect == "allow" else pb.DECISION_DENY
        assert reply.decision == expected
        metrics = f"http://127.0.0.1:{ports['--metrics-listen']}/metrics"
        with urllib.request.urlopen(metrics, timeout=10) as page:
            assert b"verdict_workers_ready" in page.read()

        nobody = [*probe[:-1], f"127.0.0.1:{free_port()}"]
        check = subprocess.run(nobody, env=env, cwd=root, capture_output=True, text=True)
        assert check.returncode == 1
        assert check.stderr.count("\n") == 1
        assert "unreachable" in check.stderr

    assert {folder: files_under(folder) for folder in (venv, policies)} == before
    assert not any(root.iterdir())
    assert not home.exists()
    assert "server_started" in log.read_text()

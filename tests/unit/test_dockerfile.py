"""The Dockerfile agrees with the code: its flags parse, its ports match, its settings exist."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.dockerfile import (
    context_files,
    exec_form,
    flag,
    healthcheck_argv,
    ignore_rules,
    ignored,
    instructions,
    stages,
)
from verdict.cli import build_parser
from verdict.config import Settings

RUNTIME = stages()[-1]
ENTRYPOINT = exec_form(RUNTIME.one("ENTRYPOINT").args)
CMD = exec_form(RUNTIME.one("CMD").args)


def port(listen: str) -> str:
    """The port of HOST:PORT."""
    return listen.rpartition(":")[2]


def test_entrypoint_is_the_verdict_command_in_exec_form() -> None:
    """ENTRYPOINT is ["verdict"], so `docker run IMAGE validate ...` runs any subcommand."""
    assert ENTRYPOINT == ["verdict"]
    assert RUNTIME.env()["PATH"].startswith("/opt/verdict/bin:")


def test_cmd_flags_are_accepted_by_verdict_serve() -> None:
    """The CMD parses with `verdict serve`'s own parser and serves on every interface."""
    args = build_parser().parse_args(CMD)
    assert args.command == "serve"
    assert args.listen == "0.0.0.0:50051"
    assert args.health_listen is not None
    assert args.health_listen.startswith("0.0.0.0:")


def test_healthcheck_parses_and_probes_the_health_port() -> None:
    """HEALTHCHECK runs `verdict healthcheck` against the plaintext health port of the CMD."""
    argv = healthcheck_argv(RUNTIME)
    assert argv[:2] == ["verdict", "healthcheck"]
    args = build_parser().parse_args(argv[1:])
    assert args.func is not None
    assert port(args.server) == port(flag(CMD, "--health-listen"))
    assert args.server.startswith("127.0.0.1:")


def test_exposed_ports_are_the_ports_served() -> None:
    """EXPOSE names exactly the gRPC, health and metrics ports of the CMD."""
    served = {port(flag(CMD, f)) for f in ("--listen", "--health-listen", "--metrics-listen")}
    assert set(RUNTIME.one("EXPOSE").args.split()) == served


def test_env_settings_exist() -> None:
    """Every VERDICT_* variable the image sets is a Settings field, and policies have a fixed
    path that the image creates for the mount."""
    env = RUNTIME.env()
    names = {k.removeprefix("VERDICT_").lower() for k in env if k.startswith("VERDICT_")}
    assert names <= set(Settings.model_fields)
    assert env["VERDICT_STORES"] == "/etc/verdict/policies"
    assert "mkdir -p /etc/verdict/policies" in RUNTIME.all("RUN")[0].args
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["TMPDIR"] == "/tmp"


def test_runs_as_a_numeric_non_root_user() -> None:
    """USER is a numeric uid:gid other than 0, so Kubernetes' runAsNonRoot can check it."""
    uid, _, gid = RUNTIME.one("USER").args.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0


def test_stages_share_one_pinned_glibc_python() -> None:
    """Both stages use the same pinned slim (glibc) Python 3.11 tag: cedarpy has no musl
    wheels, and the venv copied between stages needs the same interpreter path."""
    builder, runtime = stages()
    assert builder.name == "builder"
    assert builder.base == runtime.base == "python:3.11-slim-bookworm"
    assert RUNTIME.one("COPY").args == "--from=builder /opt/verdict /opt/verdict"


def test_builder_installs_the_wheel_with_the_constraints() -> None:
    """The builder builds the wheel and installs it at the pinned versions, then pip check."""
    (run,) = stages()[0].all("RUN")
    assert "pip wheel --no-cache-dir --no-deps" in run.args
    assert "--constraint constraints.txt" in run.args
    assert "pip check" in run.args


def test_build_context_holds_what_copy_needs_and_nothing_else() -> None:
    """Every COPY source is in the context after .dockerignore; .git, .venv, caches, bytecode
    and egg-info are not."""
    files = context_files()
    for sources, _ in stages()[0].copies():
        for source in sources:
            assert any(f == source or f.startswith(source) for f in files), source
    assert "src/verdict/cli/__init__.py" in files
    assert not [f for f in files if "__pycache__" in f or ".egg-info" in f]
    rules = ignore_rules()
    for path in (".venv/bin/python", ".git/HEAD", "benchmarks/results/x.json", "policies/a"):
        assert ignored(path, rules), path
    assert (ROOT / ".dockerignore").is_file()


def test_continuation_lines_and_comments_are_joined() -> None:
    """The reader joins backslash continuations and skips comments between them."""
    text = 'FROM a AS b\nRUN one \\\n# note\n  && two\nCMD ["x"]\n'
    found = instructions(text)
    assert [(i.keyword, i.args, i.line) for i in found] == [
        ("FROM", "a AS b", 1),
        ("RUN", "one && two", 2),
        ("CMD", '["x"]', 5),
    ]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_healthcheck_timeout_must_be_positive(value: str) -> None:
    """`verdict healthcheck --timeout` refuses zero, negative and non-numbers (exit 2)."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["healthcheck", "--timeout", value])
    assert info.value.code == 2

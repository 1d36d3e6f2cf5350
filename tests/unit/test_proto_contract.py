"""The proto contract gate: buf lint holds, buf breaking refuses breaks and passes additions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"
GATE = ROOT / "scripts" / "proto_breaking.py"
AUTHZ = Path("proto/verdict/v1/authorization.proto")
# Fixed identities so the throwaway repositories commit without any user git configuration.
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


@pytest.fixture(scope="module")
def buf() -> Path:
    """The pinned buf; its absence fails the test (make test and make lint install it)."""
    if not BUF.is_file():
        pytest.fail(f"buf is missing at {BUF}: run `make tools` (npm installs the pinned version)")
    return BUF


def workspace(dest: Path, *, gate: bool = True) -> Path:
    """Copy the contract (proto/, and with ``gate`` buf.yaml and vendor/) into ``dest``."""
    shutil.copytree(ROOT / "proto", dest / "proto")
    if gate:
        shutil.copytree(ROOT / "vendor" / "proto", dest / "vendor" / "proto")
        shutil.copy2(ROOT / "buf.yaml", dest / "buf.yaml")
    return dest


def edit(root: Path, old: str, new: str, file: Path = AUTHZ) -> None:
    """Replace the one occurrence of ``old`` in ``file`` under ``root``."""
    path = root / file
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not unique in {file}"
    path.write_text(text.replace(old, new))


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its text output; the exit status is the caller's to check."""
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=False
    )


def breaking(buf: Path, new: Path, old: Path) -> subprocess.CompletedProcess[str]:
    """buf breaking of the workspace ``new`` against the workspace ``old``."""
    return run(buf, "breaking", "--against", old, cwd=new)


def test_buf_lint_passes_on_the_real_protos(buf: Path) -> None:
    """The committed protos pass buf lint with the committed buf.yaml."""
    done = run(buf, "lint", cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_buf_lint_refuses_a_new_enum_without_prefix(buf: Path, tmp_path: Path) -> None:
    """The admin.proto exemption is narrow: a new enum elsewhere must follow STANDARD."""
    root = workspace(tmp_path)
    (root / "proto/verdict/v1/colour.proto").write_text(
        'syntax = "proto3";\n\npackage verdict.v1;\n\nenum Colour {\n  RED = 0;\n}\n'
    )
    done = run(buf, "lint", cwd=root)
    assert done.returncode != 0
    assert 'Enum value name "RED" should be prefixed with "COLOUR_"' in done.stdout


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        pytest.param("  string id = 2;\n", "", 'field "2" with name "id"', id="delete-field"),
        pytest.param(
            "uint64 min_entity_version = 7;",
            "uint64 min_entity_version = 9;",
            'field "7" with name "min_entity_version"',
            id="renumber-field",
        ),
        pytest.param(
            "bool explain = 8;",
            "bool explained = 8;",
            'Field "8" with name "explained" on message "IsAuthorizedRequest" changed',
            id="rename-field",
        ),
    ],
)
def test_buf_breaking_refuses_a_break(
    buf: Path, tmp_path: Path, old: str, new: str, complaint: str
) -> None:
    """Deleting, renumbering or renaming a field fails buf breaking with a non-zero exit."""
    original = workspace(tmp_path / "old")
    changed = workspace(tmp_path / "new")
    edit(changed, old, new)
    done = breaking(buf, changed, original)
    assert done.returncode != 0
    assert complaint in done.stdout, done.stdout + done.stderr


def test_buf_breaking_passes_an_addition(buf: Path, tmp_path: Path) -> None:
    """A new field and a new message are compatible: buf breaking exits 0."""
    original = workspace(tmp_path / "old")
    changed = workspace(tmp_path / "new")
    edit(changed, "  bool explain = 8;\n", "  bool explain = 8;\n  string trace_id = 9;\n")
    message = "message Annotation {\n  string key = 1;\n}\n\n"
    edit(changed, "message EntityUid {", message + "message EntityUid {")
    done = breaking(buf, changed, original)
    assert done.returncode == 0, done.stdout + done.stderr


def repo_with(tmp_path: Path, *, first_gated: bool = True) -> Path:
    """A git repository whose first commit is today's contract (without buf.yaml and vendor/ if
    ``first_gated`` is false, like main before the gate)."""
    root = workspace(tmp_path / "repo", gate=first_gated)
    assert run("git", "init", "-q", "-b", "main", cwd=root).returncode == 0
    commit(root, "contract")
    if not first_gated:
        shutil.copytree(ROOT / "vendor" / "proto", root / "vendor" / "proto")
        shutil.copy2(ROOT / "buf.yaml", root / "buf.yaml")
        commit(root, "gate")
    return root


def commit(root: Path, message: str) -> None:
    """Commit everything in ``root``."""
    assert run("git", "add", "-A", cwd=root).returncode == 0
    done = run("git", "commit", "-q", "-m", message, cwd=root)
    assert done.returncode == 0, done.stderr


def gate(buf: Path, root: Path) -> subprocess.CompletedProcess[str]:
    """The gate as make lint runs it: the working tree against HEAD~1."""
    return run(sys.executable, GATE, "--buf", buf, "--root", root, cwd=root)


def test_gate_refuses_a_commit_that_deletes_a_field(buf: Path, tmp_path: Path) -> None:
    """make lint's breaking check fails when the last commit deleted a field."""
    root = repo_with(tmp_path)
    edit(root, "  string id = 2;\n", "")
    commit(root, "drop EntityUid.id")
    done = gate(buf, root)
    assert done.returncode != 0
    assert 'field "2" with name "id" on message "EntityUid" was deleted' in done.stdout


def test_gate_passes_a_commit_that_adds_a_field(buf: Path, tmp_path: Path) -> None:
    """An additive last commit passes the breaking check."""
    root = repo_with(tmp_path)
    edit(root, "  bool explain = 8;\n", "  bool explain = 8;\n  string trace_id = 9;\n")
    commit(root, "add trace_id")
    done = gate(buf, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "proto/ against HEAD~1" in done.stdout


def test_gate_compares_with_a_commit_from_before_the_gate(buf: Path, tmp_path: Path) -> None:
    """The commit that adds buf.yaml and vendor/ is still compared with the older proto/."""
    root = repo_with(tmp_path, first_gated=False)
    edit(root, "  string id = 2;\n", "")
    done = gate(buf, root)
    assert done.returncode != 0
    assert 'field "2" with name "id" on message "EntityUid" was deleted' in done.stdout


def test_gate_in_a_one_commit_repo_explains_and_passes(buf: Path, tmp_path: Path) -> None:
    """With no previous commit there is no contract to break: exit 0 with the reason."""
    root = repo_with(tmp_path)
    done = gate(buf, root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HEAD is the first commit" in done.stdout


def test_gate_in_a_shallow_clone_explains_and_fails(buf: Path, tmp_path: Path) -> None:
    """A shallow clone hides HEAD~1: the gate says how to fetch it and does not pass."""
    root = repo_with(tmp_path)
    edit(root, "  bool explain = 8;\n", "  bool explain = 8;\n  string trace_id = 9;\n")
    commit(root, "add trace_id")
    clone = tmp_path / "shallow"
    done = run("git", "clone", "-q", "--depth", "1", root.as_uri(), clone, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = gate(buf, clone)
    assert done.returncode == 2
    assert "shallow clone" in done.stderr
    assert "git fetch --unshallow" in done.stderr

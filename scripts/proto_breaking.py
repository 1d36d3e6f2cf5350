"""Run `buf breaking` on proto/ against proto/ at a git ref (default HEAD~1), offline."""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The old proto/ is laid out beside today's buf.yaml and vendored imports: a commit from before the
# gate (no buf.yaml, no vendor/) is then still comparable, and nothing is fetched from the network.
WORKSPACE = ("buf.yaml", "vendor/proto")
SHALLOW_HELP = (
    "proto-breaking: {ref} is not in this shallow clone, so the contract cannot be compared.\n"
    "  Fetch the history (git fetch --unshallow) or pass another ref: make lint BUF_AGAINST=<ref>."
)


def git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run git in ``root`` and capture its output (no exception on failure)."""
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)


def resolve(root: Path, ref: str) -> str | None:
    """The commit ``ref`` names, or None when this repository does not have it."""
    found = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return found.stdout.decode().strip() if found.returncode == 0 else None


def missing_ref(root: Path, ref: str) -> int:
    """Explain why ``ref`` is absent; 0 only when there is genuinely no earlier contract."""
    if git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == b"true":
        # Fail closed: a clone that hides history must not pass the gate unseen.
        print(SHALLOW_HELP.format(ref=ref), file=sys.stderr)
        return 2
    if ref.startswith("HEAD") and git(root, "rev-parse", "--verify", "-q", "HEAD^").returncode:
        print(f"proto-breaking: HEAD is the first commit, so {ref} has no contract to break.")
        return 0
    print(f"proto-breaking: unknown git ref {ref!r}.", file=sys.stderr)
    return 2


def old_tree(root: Path, commit: str, into: Path) -> bool:
    """Write proto/ as of ``commit`` into ``into`` with today's workspace; False if it had none."""
    if git(root, "cat-file", "-e", f"{commit}:proto").returncode != 0:
        return False
    archive = git(root, "archive", "--format=tar", commit, "--", "proto")
    if archive.returncode != 0:
        raise SystemExit(f"proto-breaking: git archive failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    for name in WORKSPACE:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, into / name)
        else:
            shutil.copy2(source, into / name)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--buf", required=True, help="path of the buf binary")
    parser.add_argument("--against", default="HEAD~1", help="git ref to compare with")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (has buf.yaml)")
    args = parser.parse_args()
    root = args.root.resolve()
    commit = resolve(root, args.against)
    if commit is None:
        return missing_ref(root, args.against)
    with tempfile.TemporaryDirectory(prefix="verdict-proto-") as tmp:
        if not old_tree(root, commit, Path(tmp)):
            print(f"proto-breaking: {args.against} has no proto/; nothing to compare.")
            return 0
        print(f"proto-breaking: proto/ against {args.against} ({commit[:12]})")
        done = subprocess.run([args.buf, "breaking", "--against", tmp], cwd=root, check=False)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

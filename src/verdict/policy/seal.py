"""Store seals: the digest of every file of a policy store, written by ``verdict seal`` once a
deploy's last file is written; a sealed store loads only while its files match.

Why: a reload cannot tell a finished file from a valid prefix of one. A generator that writes
``guard.cedar`` with ``>`` and, a second later, appends its forbid with ``>>`` leaves a file
that nobody holds open and that is valid Cedar without the forbid; a reload landing between
the two served it (ALLOW where the old and the new file both deny: attack round 16). With a
seal, the half-written file does not match and the last good version serves on until the
deploy seals the new files (OPA's signed bundles carry a manifest of digests for the same
reason). ``VERDICT_REQUIRE_SEAL`` makes every store need one.

The seal is JSON: ``{"verdict_seal": 1, "files": {"<path in the store>": "sha256:<hex>"}}``,
listing every ``*.cedar`` file and each of the store's named files present (schema,
``store.toml``, links, ``entities.json``). A file added, removed or changed since fails the
load, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from verdict.errors import Diagnostic, PolicyLoadError, RequestError
from verdict.files import FileAbsentError, FileReadError, read_store_text
from verdict.json_values import parse_json
from verdict.policy.file_limits import MAX_POLICY_FILE_BYTES

SEAL_FILE = "store.seal"
SEAL_FORMAT = 1
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
RESEAL_HINT = "seal the store again (`verdict seal`) once every file is written"
# A sealed store's entities.json digest when its seal lists none: any such file is refused.
SEALED_ABSENT = "absent"
# A seal lists at most as many files as a store may hold names (loader.MAX_STORE_NAMES); the
# files that differ from it are named up to MAX_SHOWN_PROBLEMS (ReloadPolicies' answer and
# the log line stay small: 100,000 named made a 16 MB answer that gRPC refused, round 21).
MAX_SEALED_FILES = 100_000
MAX_SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class Seal:
    """The digests a store's files must have: relative POSIX path -> ``sha256:<hex>``."""

    files: Mapping[str, str]


def digest_of(content: bytes) -> str:
    """A file's digest as a seal writes it."""
    return "sha256:" + hashlib.sha256(content).hexdigest()


def read_seal(root: Path) -> Seal | None:
    """The seal of the store at ``root`` (None without one); PolicyLoadError when it is unusable.
    Read through ``files`` like every store file (pinned within a load, confined to the
    store), with the bound ``store_version`` reads it with: both see the same bytes."""
    shown = f"{root.name}/{SEAL_FILE}"
    try:
        text = read_store_text(root / SEAL_FILE, MAX_POLICY_FILE_BYTES)
    except FileAbsentError:
        return None
    except FileReadError as exc:
        raise PolicyLoadError([Diagnostic(shown, 0, f"invalid seal: {exc}")]) from None
    try:
        document = parse_json(text, SEAL_FILE, max_depth=3).value
    except RequestError as exc:
        raise PolicyLoadError([Diagnostic(shown, 0, f"invalid seal: {exc.problem}")]) from None
    return Seal(_checked_files(document, shown))


def _checked_files(document: object, shown: str) -> dict[str, str]:
    def invalid(problem: str) -> PolicyLoadError:
        return PolicyLoadError([Diagnostic(shown, 0, f"invalid seal: {problem}")])

    if not isinstance(document, dict) or set(document) != {"verdict_seal", "files"}:
        raise invalid('must be {"verdict_seal": 1, "files": {...}}')
    if document["verdict_seal"] != SEAL_FORMAT or isinstance(document["verdict_seal"], bool):
        raise invalid(f"verdict_seal must be {SEAL_FORMAT} (a seal of another version)")
    files = document["files"]
    if not isinstance(files, dict):
        raise invalid("files must be an object")
    if len(files) > MAX_SEALED_FILES:
        raise invalid(f"lists more than {MAX_SEALED_FILES:,} files")
    for name, digest in files.items():
        problem = path_problem(name)
        if problem is not None:
            raise invalid(f"files: {shown_name(name)} {problem}")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            digits = '"sha256:" and 64 lowercase hex digits'
            raise invalid(f"files: {shown_name(name)} must map to {digits}")
    return dict(files)


def shown_name(name: str) -> str:
    """A file name for a message: quoted, cut at 100 characters."""
    return repr(name[:100]) + ("..." if len(name) > 100 else "")


def path_problem(name: str) -> str | None:
    """Why ``name`` cannot be a path in a seal (None if it can): a plain relative path inside
    the store, as the loader names its files, never the seal itself."""
    path = PurePosixPath(name)
    plain = name and not path.is_absolute() and ".." not in path.parts and "\0" not in name
    if not plain or path.as_posix() != name:
        return "is not a relative path inside the store"
    if name == SEAL_FILE:
        return "is the seal itself"
    return None


def seal_problems(root: Path, seal: Seal, found: Mapping[str, str]) -> list[Diagnostic]:
    """How the store's files (``found``: relative path -> digest of the bytes read) differ
    from its seal, one problem per file, in path order."""
    problems: list[Diagnostic] = []
    differing = [
        n for n in sorted(found.keys() | seal.files.keys()) if seal.files.get(n) != found.get(n)
    ]
    for name in differing[:MAX_SHOWN_PROBLEMS]:
        sealed, now = seal.files.get(name), found.get(name)
        if sealed is None:
            what = "is not in store.seal (added after the store was sealed)"
        elif now is None:
            what = "is in store.seal but missing (removed after the store was sealed)"
        else:
            what = "does not match store.seal (changed after the store was sealed)"
        problems.append(Diagnostic(f"{root.name}/{name[:200]}", 0, f"{what}: {RESEAL_HINT}"))
    if len(differing) > MAX_SHOWN_PROBLEMS:
        more = f"and {len(differing) - MAX_SHOWN_PROBLEMS:,} more files differ from store.seal"
        problems.append(Diagnostic(f"{root.name}/{SEAL_FILE}", 0, more))
    return problems


def text_digest(text: str) -> str:
    """The digest of a file whose text (strict UTF-8, as ``files.read_text`` gives it) is
    ``text``: the same bytes, encoded again."""
    return digest_of(text.encode("utf-8"))


def entities_problem(shown: str, digest: str, sealed: str) -> Diagnostic | None:
    """A problem unless entities.json, as parsed (``digest``: ``text_digest`` of its text),
    has the ``sealed`` digest ("": not sealed; ``SEALED_ABSENT``: sealed without one, so any
    file is refused). The embedded store and ``verdict entities load`` read the file apart
    from the store's load: the digest is checked again on the bytes they parse."""
    if not sealed or digest == sealed:
        return None
    if sealed == SEALED_ABSENT:
        problem = f"is not in store.seal (added after the store was sealed): {RESEAL_HINT}"
    else:
        problem = f"does not match store.seal (changed after it was sealed): {RESEAL_HINT}"
    return Diagnostic(shown, 0, problem)


def write_seal(root: Path, found: Mapping[str, str]) -> Path:
    """Write the seal of ``found`` (relative path -> digest) into the store at ``root``, by a
    rename: a reload reads the old seal or the new one, never a part of one."""
    document = {"verdict_seal": SEAL_FORMAT, "files": dict(sorted(found.items()))}
    body = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    target = root / SEAL_FILE
    temporary = root / f".{SEAL_FILE}.{os.getpid()}.tmp"
    with temporary.open("w", encoding="utf-8") as file:
        file.write(body)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, target)
    folder = os.open(root, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return target

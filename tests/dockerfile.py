"""Read the project's Dockerfile and .dockerignore, so tests can rebuild the image's layout."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case), its text after the keyword, its first line."""

    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    """A FROM and the instructions under it."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """Every instruction of this kind, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        """The only instruction of this kind (an assertion error if not exactly one)."""
        found = self.all(keyword)
        assert len(found) == 1, f"{len(found)} {keyword} instructions in the stage"
        return found[0]

    def env(self) -> dict[str, str]:
        """ENV of this stage, as written (``$VAR`` not expanded)."""
        pairs: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV key=value form only (line {instruction.line})"
                pairs[key] = value
        return pairs

    def copies(self) -> list[tuple[list[str], str]]:
        """COPY instructions from the build context: (sources, destination)."""
        result = []
        for instruction in self.all("COPY"):
            words = instruction.args.split()
            if any(w.startswith("--from") for w in words):
                continue
            result.append((words[:-1], words[-1]))
        return result


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    found: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(args.split()), start))
        pending, start = "", 0
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The stages of a Dockerfile, in order."""
    result: list[Stage] = []
    for instruction in instructions(path.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(words[0], name))
        else:
            assert result, f"{instruction.keyword} before FROM"
            result[-1].instructions.append(instruction)
    return result


def exec_form(args: str) -> list[str]:
    """The argv of an exec-form (JSON array) CMD, ENTRYPOINT or HEALTHCHECK CMD."""
    argv = json.loads(args)
    assert isinstance(argv, list), f"not exec form: {args}"
    assert all(isinstance(a, str) for a in argv)
    return [str(a) for a in argv]


def healthcheck_argv(stage: Stage) -> list[str]:
    """The argv of the stage's HEALTHCHECK (after its options)."""
    _, cmd, rest = stage.one("HEALTHCHECK").args.partition("CMD ")
    assert cmd, "HEALTHCHECK without CMD"
    return exec_form(rest)


def flag(argv: list[str], name: str) -> str:
    """The value after ``name`` in ``argv``."""
    return argv[argv.index(name) + 1]


def _pattern(text: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus ``**``)."""
    parts = []
    for piece in re.split(r"(\*\*/|\*\*|\*|\?)", text.strip("/")):
        parts.append(
            {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(piece)
            or re.escape(piece)
        )
    return re.compile("".join(parts) + r"\Z")


@dataclass(frozen=True)
class IgnoreRule:
    """One .dockerignore line: exclude (or, with ``!``, include again) what ``pattern`` matches."""

    exclude: bool
    text: str
    pattern: re.Pattern[str]


def ignore_rules(path: Path = DOCKERIGNORE) -> list[IgnoreRule]:
    """The rules of a .dockerignore, in file order."""
    rules = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        text = line.lstrip("!").strip("/")
        rules.append(IgnoreRule(not line.startswith("!"), text, _pattern(text)))
    return rules


def ignored(relative: str, rules: list[IgnoreRule]) -> bool:
    """Whether Docker leaves ``relative`` out of the build context: the last pattern matching
    the path or one of its parent folders decides, as in Docker's own matcher."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for rule in rules:
        if any(rule.pattern.match(prefix) for prefix in prefixes):
            excluded = rule.exclude
    return excluded


def _may_include_below(folder: str, rules: list[IgnoreRule]) -> bool:
    """Whether an include rule could take back something inside an ignored ``folder``."""
    for rule in rules:
        if rule.exclude:
            continue
        literal = re.split(r"[*?\[]", rule.text)[0]
        if literal.startswith(folder + "/") or not literal or folder.startswith(literal):
            return True
    return False


def context_files(root: Path = ROOT) -> list[str]:
    """Files of the build context (relative paths), .dockerignore applied; ignored folders no
    rule can take anything back from (.git, .venv) are not walked."""
    rules = ignore_rules(root / ".dockerignore")
    files = []
    for folder, subfolders, names in os.walk(root):
        base = Path(folder).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        subfolders[:] = [
            d
            for d in sorted(subfolders)
            if not ignored(prefix + d, rules) or _may_include_below(prefix + d, rules)
        ]
        files += [prefix + n for n in sorted(names) if not ignored(prefix + n, rules)]
    return sorted(files)

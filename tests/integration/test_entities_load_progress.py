"""`entities load` on a pipe shows the parse going (counts and share of the file), and its
validate phase where it runs: beside the parse, ended before the switch."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from benchmarks.bench_entities_load import write_store
from tests.integration.test_cli_behaviour import verdict
from tests.redis_support import RedisProcess, redis_fixture  # noqa: F401 (fixture)
from verdict.progress import BarReporter, reporter

PARSE_LINE = re.compile(r"parse: ([\d,]+) \((\d+)% of the file\) in [\d.]+s")
NOTE = ", by Cedar beside the parse and the write; the switch to the new entities waits for it"


def load_lines(redis: RedisProcess, folder: Path, count: int, every: str) -> list[str]:
    """The stderr lines of loading ``count`` generated entities, progress every ``every`` s."""
    write_store(folder, count)
    result = verdict(
        "entities", "load", "--stores", str(folder / "stores"), "--redis-url", redis.url,
        "--progress-seconds", every, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"lending: {count:,} entities in ")
    return result.stderr.splitlines()


def progress_of_parse(lines: list[str]) -> list[tuple[int, int]]:
    """(entities parsed, percent of the file) of each periodic parse line, in order."""
    found = [PARSE_LINE.fullmatch(line) for line in lines]
    return [(int(m[1].replace(",", "")), int(m[2])) for m in found if m]


@pytest.mark.parametrize(
    ("count", "every"),
    [
        (60_000, "0.05"),  # 16 MB: parsed in two halves, the child's items counted too
        (7_000, "0.001"),  # under 2 MiB: parsed whole, by this process alone
    ],
)
def test_the_parse_reports_as_it_goes_on_a_pipe(
    redis: RedisProcess, tmp_path: Path, count: int, every: str
) -> None:
    """Periodic `parse: N (P% of the file) in Ts` lines between the parse's start and end, their
    counts and shares growing; the done line has the whole file's count."""
    lines = load_lines(redis, tmp_path, count, every)
    started, done = (
        lines.index("parse: started"),
        lines.index(next(line for line in lines if line.startswith("parse: done, "))),
    )
    seen = progress_of_parse(lines)
    assert len(seen) >= 2, lines
    assert all(started < lines.index(line) < done for line in lines if PARSE_LINE.fullmatch(line))
    counts, shares = [c for c, _ in seen], [s for _, s in seen]
    assert counts == sorted(counts), lines
    assert counts[0] < counts[-1], lines
    assert shares == sorted(shares), lines
    assert all(0 <= s <= 100 for s in shares), lines
    assert counts[-1] <= count
    assert re.fullmatch(rf"parse: done, {count:,} \(100% of the file\) in [\d.]+s", lines[done])


def test_validate_is_shown_beside_the_parse_and_before_the_switch(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """`validate: started` follows `parse: started` (Cedar checks parts as they are parsed) and
    says so; `validate: done` comes after the writes' staging and before `write: done`, which
    is the switch's end."""
    lines = load_lines(redis, tmp_path, 60_000, "0.05")
    order = [
        "read: started",
        "parse: started",
        f"validate: started{NOTE}",
        "parse: done, ",
        "write: started, 60,000 to do",
        "validate: done, ",
        "write: done, 60,000/60,000 (100%) in ",
    ]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(o)) for o in order]
    assert positions == sorted(positions), lines
    assert positions[2] == positions[1] + 1, lines  # nothing parsed before Cedar may check it


def test_a_progress_interval_that_is_not_positive_is_refused(redis: RedisProcess) -> None:
    """`--progress-seconds 0`: the flag and its bound, exit 2."""
    result = verdict(
        "entities", "load", "--stores", "policies", "--redis-url", redis.url,
        "--progress-seconds", "0",
    )  # fmt: skip
    assert (result.returncode, result.stderr.splitlines()[-1]) == (
        2,
        "verdict entities load: error: --progress-seconds=0: must be at least 0.001",
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_parse_on_a_terminal_is_a_bar_of_the_entities_the_file_holds_at_this_rate() -> None:
    """On a terminal the parse's bar counts entities against the total its share of the file
    read so far implies, and ends full at the count parsed."""
    screen = _Terminal()
    with reporter(screen) as progress:
        assert isinstance(progress, BarReporter)
        with progress.phase("parse") as parsing:
            parsing.reached(1_000, 0.25)
            parsing.reached(3_000, 0.75)
            assert progress._bars.tasks[0].total == 4_000  # rich's own record of the bar
            parsing.reached(4_200, 1.0)
    assert "4200/4200" in screen.getvalue()

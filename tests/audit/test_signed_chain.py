"""Signed audit chains (``--audit-key-file``) and the marks a failed write of unknown outcome
leaves: what verify, replay and `verdict serve` make of them."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.audit.test_audit_cli import recorded_lines, write_log
from tests.conftest import POLICIES
from tests.integration.test_cli import verdict
from verdict.audit.chain import MAX_MARKS, Chainer, canonical, line_hash
from verdict.audit.keys import AuditKey, AuditKeyError, read_audit_key
from verdict.audit.verify import Unacknowledged, verify

KEY = AuditKey.from_secret(b"k" * 32)
OTHER = AuditKey.from_secret(b"o" * 32)


def signed(count: int, key: AuditKey = KEY, segment: str = "s") -> list[str]:
    chainer = Chainer(segment, key)
    return [chainer.chain({"n": n, "decision": "ALLOW"}) for n in range(count)]


def test_a_signed_chain_verifies_with_its_key_and_without_one() -> None:
    """Every record names the key and carries a MAC; without a key only the chain is checked."""
    lines = signed(5)
    assert all(json.loads(line)["key_id"] == KEY.key_id for line in lines)
    assert verify(lines, KEY) == (5, [])
    assert verify(lines) == (5, [])


def test_a_record_rewritten_with_a_rebuilt_chain_is_found_only_by_its_mac() -> None:
    """An attacker flips record 2 to DENY and rebuilds every later prev (no secret needed):
    the chain alone is intact again; the MAC check names line 3, the altered record, and each
    record whose prev was rewritten after it."""
    lines = signed(5)
    records = [json.loads(line) for line in lines]
    records[2]["decision"] = "DENY"
    rebuilt = lines[:2]
    for record in records[2:]:
        record["prev"] = line_hash(rebuilt[-1])
        rebuilt.append(canonical(record))
    assert verify(rebuilt) == (5, [])
    count, breaks = verify(rebuilt, KEY)
    assert count == 5
    assert [(b.position, b.problem.split(":")[0]) for b in breaks] == [
        (3, "mac does not match"),
        (4, "mac does not match"),
        (5, "mac does not match"),
    ]


def test_unsigned_records_and_other_keys_are_named() -> None:
    """A record without a MAC, and one signed by another key, are each a break at its line."""
    lines = [*signed(2), Chainer("u").chain({"n": 0}), signed(1, OTHER, "o")[0]]
    _, breaks = verify(lines, KEY)
    assert [b.position for b in breaks] == [3, 4]
    assert breaks[0].problem.startswith("no mac")
    assert breaks[1].problem.startswith("signed with another key")


def test_a_successor_marks_what_may_have_been_stored_and_carries_marks_over_failures() -> None:
    """Two records acknowledged, then a write of two fails (its outcome unknown): the next
    segment marks ``a`` from seq 2. Its own first write fails too: the one after marks both."""
    first = Chainer("a", KEY)
    stored = [first.chain({"n": n}) for n in range(2)]
    state = first.state()
    late = [first.chain({"n": n}) for n in (2, 3)]  # these ran late in Redis
    second = first.successor(state, "b")
    lost = second.chain({"n": 2})  # never stored
    third = second.successor((0, "anchor:b"), "c")
    resumed = third.chain({"n": 2})
    assert json.loads(resumed)["follows"] == [
        {"segment": "a", "acknowledged": 2},
        {"segment": "b", "acknowledged": 0},
    ]
    lines = [*stored, *late, resumed]
    assert verify(lines, KEY) == (5, [])
    marks = Unacknowledged.of(lines, KEY)
    assert [marks.holds(json.loads(line)) for line in lines] == [False, False, True, True, False]
    assert marks.holds(json.loads(lost))
    assert marks.count(lines) == 2


def test_marks_carried_over_are_bounded() -> None:
    """A long run of failed writes keeps the most recent MAX_MARKS marks, not all of them."""
    chainer = Chainer("s0")
    for n in range(1, MAX_MARKS + 20):
        chainer = chainer.successor((0, ""), f"s{n}")
    follows = json.loads(chainer.chain({}))["follows"]
    assert len(follows) == MAX_MARKS
    assert follows[-1]["segment"] == f"s{MAX_MARKS + 18}"


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"short\n"), "holds 5 bytes; at least 32 are needed"),
        (lambda p: p.write_bytes(b"x" * 5000), "is larger than 4096 bytes"),
        (lambda p: p.mkdir(), "is not a regular file"),
        (lambda p: os.mkfifo(p), "is not a regular file"),
    ],
    ids=["missing", "short", "large", "directory", "fifo"],
)
def test_an_unusable_key_file_is_refused_with_the_reason(
    tmp_path: Path, make: object, problem: str
) -> None:
    """Each unusable key file is refused at once (a FIFO does not block the start)."""
    path = tmp_path / "audit.key"
    make(path)  # type: ignore[operator]
    with pytest.raises(AuditKeyError, match=problem):
        read_audit_key(path)


def test_a_key_file_behind_a_symlink_is_read_without_surrounding_whitespace(
    tmp_path: Path,
) -> None:
    """Kubernetes mounts a Secret's keys as symlinks; a trailing newline is not key material."""
    (tmp_path / "real").write_bytes(b"k" * 32 + b"\n")
    (tmp_path / "audit.key").symlink_to(tmp_path / "real")
    assert read_audit_key(tmp_path / "audit.key") == KEY


def test_serve_refuses_an_unusable_key_file_naming_the_setting(tmp_path: Path) -> None:
    """`verdict serve --audit-key-file` with a short key: exit 2, one line naming the setting
    and the reason, never the key's bytes."""
    key = tmp_path / "audit.key"
    key.write_text("secret-but-short\n")
    result = verdict(
        "serve", "--stores", str(POLICIES), "--listen", "127.0.0.1:0",
        "--audit-sink", "file", "--audit-file", str(tmp_path / "a.jsonl"),
        "--audit-key-file", str(key),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-800:]
    assert f"audit_key_file {key}" in result.stderr
    assert "at least 32 are needed" in result.stderr
    assert "secret-but-short" not in result.stderr + result.stdout


def test_verify_cli_checks_signatures_and_reports_unacknowledged_records(tmp_path: Path) -> None:
    """`verify --key-file`: exit 0 and "signed" for the real log; records a late write left
    are counted, not breaks; a wrong key is exit 1; an unusable key file exit 2."""
    key = tmp_path / "audit.key"
    key.write_bytes(b"k" * 32)
    first = Chainer("a", KEY)
    lines = [first.chain({"n": 0}), first.chain({"n": 1})]
    second = first.successor(first.state(), "b")
    lines += [first.chain({"n": 2}), second.chain({"n": 2})]
    log = write_log(tmp_path, lines)
    ok = verdict("audit", "verify", str(log), "--key-file", str(key))
    assert ok.returncode == 0, ok.stdout
    assert "4 records, intact, signed" in ok.stdout
    assert "1 records written but never acknowledged" in ok.stdout
    key.write_bytes(b"o" * 32)
    wrong = verdict("audit", "verify", str(log), "--key-file", str(key))
    assert wrong.returncode == 1
    assert wrong.stdout.count("signed with another key") == 4
    unusable = verdict("audit", "verify", str(log), "--key-file", str(tmp_path / "none"))
    assert unusable.returncode == 2
    assert "does not exist" in unusable.stderr


def test_replay_skips_records_that_signed_marks_say_were_never_acknowledged(
    tmp_path: Path,
) -> None:
    """A signed log whose last segment marks its predecessor's last two records: against a
    frozen store, `replay --key-file` counts those two "never acknowledged", never changes;
    without the key the marks are not trusted and all six are replayed."""
    decisions = [json.loads(line) for line in asyncio.run(recorded_lines())]
    kept = [r for r in decisions if "source_ip" not in r["context_keys"]][:6]
    plain = [{k: v for k, v in r.items() if k not in ("segment", "seq", "prev")} for r in kept]
    first = Chainer("a", KEY)
    lines = [first.chain(record) for record in plain[:3]]
    state = first.state()
    lines += [first.chain(record) for record in plain[3:5]]
    lines.append(first.successor(state, "b").chain(plain[5]))
    candidate = tmp_path / "candidate"
    shutil.copytree(POLICIES / "lending", candidate / "lending")
    (candidate / "lending" / "freeze.cedar").write_text(
        '@id("freeze")\nforbid (principal, action, resource);\n'
    )
    key = tmp_path / "audit.key"
    key.write_bytes(KEY.secret)
    log = str(write_log(tmp_path, lines))
    result = verdict("audit", "replay", log, "--stores", str(candidate), "--key-file", str(key))
    assert "not replayed (never acknowledged): 2" in result.stdout, result.stdout
    assert "4 replayed" in result.stdout
    unkeyed = verdict("audit", "replay", log, "--stores", str(candidate))
    assert "6 replayed" in unkeyed.stdout, unkeyed.stdout

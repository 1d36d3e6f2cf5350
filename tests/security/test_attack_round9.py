"""Attack round 9: the signed decision audit log (``--audit-key-file``) and the ``follows``
marks of writes whose outcome is unknown (docs/audit.md), attacked by someone who can write the
log but does not hold the key, and by a hostile gRPC caller whose values end up in records.

Seven findings, each a test asserting the correct behaviour, all fixed in the same session
(verdict.audit.verify): a non-ASCII mac and a 5,000-digit integer crashed verify; a signed
segment copied into another file, acknowledged records cut before a marking segment, and
records cut from the middle of a file at a restart went unnoticed; forged unsigned marks hid
real decisions from replay; a non-canonical last line passed. The attacks that held are kept
as passing tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.integration.test_cli import verdict
from tests.security.authn_support import verdict_app
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.audit.chain import Chainer, canonical, line_hash
from verdict.audit.keys import AuditKey
from verdict.client import build_request
from verdict.model import EntityUid

SECRET = b"round9-secret-" + b"k" * 32
KEY = AuditKey.from_secret(SECRET)
OTHER = AuditKey.from_secret(b"o" * 32)


def key_file(tmp_path: Path, secret: bytes = SECRET) -> Path:
    path = tmp_path / "audit.key"
    path.write_bytes(secret + b"\n")
    return path


def signed(count: int, segment: str, key: AuditKey = KEY) -> list[str]:
    """``count`` records of ``segment`` as the server signs them."""
    chainer = Chainer(segment, key)
    return [chainer.chain({"n": n, "decision": "ALLOW"}) for n in range(count)]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def check(*files: Path, key: Path | None) -> Any:
    extra = ["--key-file", str(key)] if key is not None else []
    return verdict("audit", "verify", *map(str, files), *extra)


def no_traceback(result: Any) -> bool:
    return "Traceback" not in result.stderr + result.stdout


# --- Findings ------------------------------------------------------------------------------


def test_a_mac_with_a_non_ascii_character_is_a_break_not_a_traceback(tmp_path: Path) -> None:
    """The writer (no key) replaces the last record's mac with "é" (key_id kept). verify must
    name line 3 as a bad MAC and exit 1, not crash."""
    lines = signed(3, "s")
    record = json.loads(lines[2])
    record["mac"] = "\u00e9" * 64
    log = write(tmp_path / "a.jsonl", [*lines[:2], canonical(record)])
    result = check(log, key=key_file(tmp_path))
    assert no_traceback(result), result.stderr[-400:]
    assert result.returncode == 1
    assert "a.jsonl:3:" in result.stdout
    assert "mac does not match" in result.stdout


def test_a_huge_integer_in_a_line_is_reported_not_a_traceback(tmp_path: Path) -> None:
    """One appended line ``{"seq": 111...1}`` (5000 digits). verify --key-file must report it
    as a break at its line (exit 1); replay must skip it and exit normally."""
    log = write(tmp_path / "a.jsonl", [*signed(2, "s"), '{"seq":' + "1" * 5000 + "}"])
    result = check(log, key=key_file(tmp_path))
    assert no_traceback(result), result.stderr[-400:]
    assert result.returncode == 1
    assert "a.jsonl:3:" in result.stdout
    replayed = verdict("audit", "replay", str(log), "--stores", str(POLICIES))
    assert no_traceback(replayed), replayed.stderr[-400:]
    assert replayed.returncode == 0


def test_a_signed_segment_copied_into_another_file_is_found(tmp_path: Path) -> None:
    """A rotated file holds segment A; the live file holds segment B. The writer (no key)
    appends A's first two records to the live file. Every line is genuinely signed and each
    file's chain is intact on its own, but two records now appear twice in the log."""
    a, b = signed(3, "file-A"), signed(2, "file-B")
    rotated = write(tmp_path / "decisions.file-A.jsonl", a)
    live = write(tmp_path / "decisions.jsonl", [*b, *a[:2]])
    result = check(rotated, live, key=key_file(tmp_path))
    assert result.returncode == 1, result.stdout


def test_acknowledged_records_removed_before_a_marking_segment_are_found(
    tmp_path: Path,
) -> None:
    """Stream/stdout sink: segment A writes 3 records (acknowledged), a write then fails and B
    goes on, marking A acknowledged 3. The writer removes A's record seq 2 (mid-log)."""
    first = Chainer("stream-A", KEY)
    a = [first.chain({"n": n, "decision": "ALLOW"}) for n in range(3)]
    second = first.successor(first.state(), "stream-B")
    b = [second.chain({"n": n, "decision": "ALLOW"}) for n in range(2)]
    assert json.loads(b[0])["follows"] == [{"segment": "stream-A", "acknowledged": 3}]
    log = write(tmp_path / "stream.jsonl", [*a[:2], *b])
    result = check(log, key=key_file(tmp_path))
    assert result.returncode == 1, result.stdout


async def test_records_removed_from_the_middle_of_a_file_at_a_restart_are_found(
    tmp_path: Path,
) -> None:
    """A real server (signed, file sink) answers 3 decisions, restarts, answers 2 more into the
    same file. The writer deletes the 3rd line (last record of the first run's segment)."""
    path, key = tmp_path / "decisions.jsonl", key_file(tmp_path)
    case = lending_cases()[0]
    ask = build_request(case.principal, case.action, case.resource, context=case.context)
    for calls in (3, 2):
        async with verdict_app(audit_sink="file", audit_file=path, audit_key_file=key) as app:
            assert app.server is not None
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
                stub = pb_grpc.AuthorizationServiceStub(channel)
                for _ in range(calls):
                    await stub.IsAuthorized(ask, timeout=5)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len({json.loads(line)["segment"] for line in lines}) == 2
    whole = await asyncio.to_thread(check, path, key=key)
    assert whole.returncode == 0, whole.stdout
    write(path, [*lines[:2], *lines[3:]])
    result = await asyncio.to_thread(check, path, key=key)
    assert result.returncode == 1, result.stdout


def _changed_decision_log(tmp_path: Path) -> tuple[list[str], str]:
    """Signed records of one lending case whose recorded decision the policies now reverse."""
    case = lending_cases()[0]
    flipped = "DENY" if case.expect.upper() == "ALLOW" else "ALLOW"
    chainer = Chainer("stream-real", KEY)
    record = {
        "principal": {"type": case.principal.type, "id": case.principal.id},
        "action": {"type": case.action.type, "id": case.action.id},
        "resource": {"type": case.resource.type, "id": case.resource.id},
        "store": "lending",
        "context": case.context,
        "context_keys": sorted(case.context),
        "decision": flipped,
        "request_id": "r1",
    }
    return [chainer.chain(record) for _ in range(2)], "stream-real"


def test_a_forged_unsigned_mark_does_not_hide_signed_records_from_replay(
    tmp_path: Path,
) -> None:
    """Two signed records whose decision the current policies reverse: replay reports them
    (exit 1). The writer (no key) appends one unsigned line marking their segment as never
    acknowledged from seq 0: replay then skips them and exits 0 ("nothing changes")."""
    lines, segment = _changed_decision_log(tmp_path)
    honest = write(tmp_path / "honest.jsonl", lines)
    before = verdict("audit", "replay", str(honest), "--stores", str(POLICIES))
    assert before.returncode == 1, before.stdout + before.stderr
    forged = Chainer("stream-forged").chain({"follows": [{"segment": segment, "acknowledged": 0}]})
    log = write(tmp_path / "forged.jsonl", [*lines, forged])
    verified = check(log, key=key_file(tmp_path))
    assert verified.returncode == 1  # the forged line itself is found...
    # ...but the real, signed records must not be counted as never acknowledged,
    assert "never acknowledged" not in verified.stdout, verified.stdout
    # and replay must not skip them on the word of an unsigned line.
    after = verdict("audit", "replay", str(log), "--stores", str(POLICIES))
    assert after.returncode == 1, after.stdout


def test_a_non_canonical_last_line_is_found(tmp_path: Path) -> None:
    """The last record (ALLOW) gets a leading duplicate ``"decision":"DENY"``: Python's json
    keeps the last value, so the MAC matches, and no later prev covers the raw line."""
    lines = signed(3, "s")
    tampered = '{"decision":"DENY",' + lines[2][1:]
    assert json.loads(tampered) == json.loads(lines[2])
    log = write(tmp_path / "a.jsonl", [*lines[:2], tampered])
    result = check(log, key=key_file(tmp_path))
    assert result.returncode == 1, result.stdout


# --- Attacks that held ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    ["duplicate", "moved", "other_key", "float_seq", "escaped", "mac_not_str", "rebuilt_chain"],
)
def test_signed_records_cannot_be_duplicated_moved_or_reencoded(
    tmp_path: Path, tamper: str
) -> None:
    """In one file: a signed record repeated or moved, a record of another key's log, seq
    written as 2.0, a field's text changed to an equivalent \\u escape (a changed line feeds
    the next prev), a mac of another type, and a record altered with the chain rebuilt after
    it: verify --key-file finds each (exit 1, no traceback)."""
    lines = signed(4, "s")
    records = [json.loads(line) for line in lines]
    if tamper == "duplicate":
        lines = [*lines[:2], lines[1], *lines[2:]]
    elif tamper == "moved":
        lines = [lines[0], lines[2], lines[1], lines[3]]
    elif tamper == "other_key":
        lines = [*lines, *signed(1, "s", OTHER)]
    elif tamper == "float_seq":
        lines[2] = lines[2].replace('"seq":2', '"seq":2.0')
    elif tamper == "escaped":
        lines[1] = lines[1].replace('"ALLOW"', '"\\u0041LLOW"')
    elif tamper == "mac_not_str":
        records[3]["mac"] = [records[3]["mac"]]
        lines[3] = json.dumps(records[3])
    else:
        records[1]["decision"] = "DENY"
        rebuilt = lines[:1]
        for record in records[1:]:
            record["prev"] = line_hash(rebuilt[-1])
            rebuilt.append(canonical(record))
        lines = rebuilt
    result = check(write(tmp_path / "a.jsonl", lines), key=key_file(tmp_path))
    assert no_traceback(result), result.stderr[-400:]
    assert result.returncode == 1, result.stdout


async def test_caller_values_cannot_inject_top_level_fields(tmp_path: Path) -> None:
    """A hostile caller puts JSON-looking text naming mac/key_id/follows/segment/seq in the
    principal and resource ids and the x-request-id (context attributes are typed). Records
    keep the server's top-level fields, the values stay strings, and the signed log verifies."""
    path, key = tmp_path / "decisions.jsonl", key_file(tmp_path)
    payload = '","mac":"0","key_id":"x","follows":[{"segment":"s","acknowledged":0}],"seq":0,"a":"'
    case = lending_cases()[0]
    hostile = build_request(
        EntityUid(case.principal.type, payload),
        case.action,
        EntityUid(case.resource.type, payload),
        context=case.context,  # its attributes are typed: no string to carry the payload
    )
    async with verdict_app(audit_sink="file", audit_file=path, audit_key_file=key) as app:
        assert app.server is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
            stub = pb_grpc.AuthorizationServiceStub(channel)
            for rid in (payload, payload.replace('"', "'")):
                # refused or answered: what matters is what was recorded
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.IsAuthorized(hostile, metadata=(("x-request-id", rid),), timeout=5)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2
    assert {r["request_id"] for r in records} == {payload, payload.replace('"', "'")}
    for record in records:
        assert "follows" not in record
        assert "a" not in record
        assert record["key_id"] == KEY.key_id
        assert record["seq"] in range(len(records))
        assert record["principal"]["id"] == payload
        assert record["resource"]["id"] == payload
    result = await asyncio.to_thread(check, path, key=key)
    assert result.returncode == 0, result.stdout
    assert "intact, signed" in result.stdout


@pytest.mark.parametrize("kind", ["short", "directory", "fifo", "large"])
def test_unusable_key_files_stop_serve_and_verify_without_traceback_or_key(
    tmp_path: Path, kind: str
) -> None:
    """`verdict serve --audit-key-file` and `verdict audit verify --key-file` given a short
    (secret-bearing), a directory, a FIFO (no writer: must not hang) or an oversized key file:
    exit 2 at once, the reason named, no traceback, no key bytes printed."""
    path = tmp_path / "audit.key"
    secret = b"TOPSECRETKEYBYTES"
    if kind == "short":
        path.write_bytes(secret)
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(secret * 400)
    log = write(tmp_path / "a.jsonl", signed(1, "s"))
    served = verdict(
        "serve",
        "--stores",
        str(POLICIES),
        "--listen",
        "127.0.0.1:0",
        "--audit-sink",
        "file",
        "--audit-file",
        str(tmp_path / "out.jsonl"),
        "--audit-key-file",
        str(path),
        timeout=20,
    )
    checked = check(log, key=path)
    for result in (served, checked):
        text = result.stdout + result.stderr
        assert result.returncode == 2, text[-400:]
        assert no_traceback(result), text[-400:]
        assert "TOPSECRET" not in text
    assert "audit_key_file" in served.stdout + served.stderr

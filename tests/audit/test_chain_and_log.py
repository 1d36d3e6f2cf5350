"""The audit chain catches tampering by position; the audit log's modes do what they promise
with a real file and a real Redis stream (up, and killed)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from tests.redis_support import RedisProcess
from verdict.audit.chain import Chainer
from verdict.audit.keys import AuditKey
from verdict.audit.log import AuditLog, AuditMode
from verdict.audit.sinks import FileSink, RedisStreamSink
from verdict.audit.verify import Unacknowledged, verify
from verdict.config import Settings
from verdict.errors import AuditUnavailableError
from verdict.worker_server import worker_settings


def chained(count: int, segment: str = "s") -> list[str]:
    """``count`` chained lines of one segment."""
    chainer = Chainer(segment)
    return [chainer.chain({"n": n, "decision": "ALLOW"}) for n in range(count)]


def test_an_untouched_chain_verifies() -> None:
    """Five records of one segment and three of another, interleaved: no break."""
    first, second = chained(5, "a"), chained(3, "b")
    lines = [first[0], second[0], first[1], first[2], second[1], first[3], second[2], first[4]]
    assert verify(lines) == (8, [])


@pytest.mark.parametrize(
    ("tamper", "position"),
    [
        ("remove", 3),  # record 2 removed: record 3 now stands at line 3
        ("swap", 3),  # records 2 and 3 swapped
        ("alter", 4),  # record 2's decision changed: record 3's prev no longer matches
        ("insert", 3),  # a forged record after record 1
    ],
)
def test_tampering_is_found_at_its_position(tamper: str, position: int) -> None:
    """Each kind of tampering is reported, at the line where the chain breaks."""
    lines = chained(6)
    if tamper == "remove":
        del lines[2]
    elif tamper == "swap":
        lines[2], lines[3] = lines[3], lines[2]
    elif tamper == "alter":
        record = json.loads(lines[2])
        record["decision"] = "DENY"
        lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    else:
        forged = json.loads(lines[1])
        forged["seq"] = 2
        lines.insert(2, json.dumps(forged, sort_keys=True, separators=(",", ":")))
    _, breaks = verify(lines)
    assert breaks
    assert breaks[0].position == position


def records_written(result: str) -> float:
    """verdict_audit_records_total{result}."""
    return REGISTRY.get_sample_value("verdict_audit_records_total", {"result": result}) or 0.0


async def test_file_sink_in_deny_mode_writes_before_answering(tmp_path: Path) -> None:
    """In deny mode, record() returns once the lines are in the file; the file verifies."""
    sink = FileSink(tmp_path / "audit.jsonl", max_bytes=1 << 20, max_seconds=3600, fsync=False)
    audit = AuditLog(sink, AuditMode.DENY, queue_size=100, wait_seconds=2)
    audit.start()
    await asyncio.gather(*(audit.record([{"n": n}]) for n in range(50)))
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 50
    await audit.close()
    assert verify(lines) == (50, [])


async def test_file_rotation_starts_an_anchored_segment(tmp_path: Path) -> None:
    """Past max_bytes the file is renamed and a new segment starts; each file verifies alone."""
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(FileSink(path, 2000, 3600, False), AuditMode.DENY, 100, 2)
    audit.start()
    for n in range(60):
        await audit.record([{"n": n, "pad": "x" * 40}])
    await audit.close()
    results = await asyncio.to_thread(verify_files, tmp_path)
    assert len(results) > 1
    assert all(breaks == [] for _, breaks in results)
    assert sum(count for count, _ in results) == 60


def verify_files(folder: Path) -> list[tuple[int, list[object]]]:
    """verify() of each audit file in ``folder`` (the live one and the rotated ones)."""
    return [
        (count, list(breaks))
        for count, breaks in (
            verify(f.read_text().splitlines()) for f in sorted(folder.glob("audit*.jsonl"))
        )
    ]


async def test_redis_stream_sink_and_a_killed_redis(redis: RedisProcess) -> None:
    """Records reach the stream and verify; with Redis killed, deny mode refuses the decision
    (AuditUnavailableError) and drop mode counts the records as dropped, never waiting."""
    client = aioredis.from_url(redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    deny = AuditLog(RedisStreamSink(client, "audit", 0), AuditMode.DENY, 100, 2)
    deny.start()
    await deny.record([{"n": 1}, {"n": 2}])
    entries: Any = await client.xrange("audit")
    assert verify(fields[b"r"].decode() for _, fields in entries) == (2, [])
    redis.stop()
    with pytest.raises(AuditUnavailableError):
        await deny.record([{"n": 3}])
    await deny.close()
    dropped = records_written("dropped")
    client2 = aioredis.from_url(redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    drop = AuditLog(RedisStreamSink(client2, "audit", 0), AuditMode.DROP, 100, 2)
    drop.start()
    await asyncio.wait_for(drop.record([{"n": 4}]), 0.5)  # never waits for the sink
    await drop.close()
    assert records_written("dropped") == dropped + 1


async def test_a_full_queue_refuses_in_deny_mode_and_drops_in_drop_mode(tmp_path: Path) -> None:
    """With the writer not started, the queue (size 2) fills: deny refuses the third call,
    drop counts it."""
    deny = AuditLog(FileSink(tmp_path / "a.jsonl", 1 << 20, 3600, False), AuditMode.DENY, 2, 0.2)
    for _ in range(2):
        with pytest.raises(AuditUnavailableError):  # nobody writes: each times out
            await deny.record([{"n": 0}])
    with pytest.raises(AuditUnavailableError):
        await deny.record([{"n": 1}])
    await deny.sink.close()
    dropped = records_written("dropped")
    drop = AuditLog(FileSink(tmp_path / "b.jsonl", 1 << 20, 3600, False), AuditMode.DROP, 2, 0.2)
    for n in range(3):
        await drop.record([{"n": n}])
    assert records_written("dropped") == dropped + 1
    await drop.sink.close()


def test_each_worker_writes_its_own_audit_file(tmp_path: Path) -> None:
    """With several workers, worker i's file sink is decisions.w<i>.jsonl: no two processes
    append to (or rotate) one file."""
    settings = Settings(stores=Path("policies"), audit_sink="file", audit_file=tmp_path / "d.jsonl")
    assert worker_settings(settings, 1).audit_file == tmp_path / "d.w1.jsonl"
    assert worker_settings(settings.model_copy(update={"audit_sink": "redis"}), 1) == (
        settings.model_copy(update={"audit_sink": "redis"})
    )


async def test_a_file_batch_written_after_its_callers_gave_up_is_marked_in_the_same_file(
    tmp_path: Path,
) -> None:
    """Deny mode, a file sink: lines written (a slow fsync) after their callers were refused go
    on in a new segment of the same file that marks them as never acknowledged; the file
    still verifies, and the next records are acknowledged (round 20, finding 3)."""
    key = AuditKey.from_secret(b"a-signing-key-of-at-least-32-byt")
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path, 1 << 20, 3600, False, key)
    before = sink.chainer.state()
    await sink.write([sink.chainer.chain({"request_id": "late", "decision": "ALLOW"})])
    sink.written_unacknowledged(before)
    await sink.write([sink.chainer.chain({"request_id": "next", "decision": "DENY"})])
    await sink.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert verify(lines, key) == (2, [])
    marks = Unacknowledged.of(lines, key)
    assert [
        json.loads(line)["request_id"] for line in lines if not marks.holds(json.loads(line))
    ] == ["next"]


async def test_records_of_a_refused_caller_still_queued_are_never_written(tmp_path: Path) -> None:
    """Deny mode: a caller refused while its records waited in the queue (the writer busy with
    an earlier batch) has them dropped, not written later as answered."""
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(FileSink(path, 1 << 20, 3600, False), AuditMode.DENY, 10, 0.2)
    # The writer not started yet: the first caller's records wait in the queue past its wait.
    with pytest.raises(AuditUnavailableError):
        await audit.record([{"request_id": "refused", "decision": "ALLOW"}])
    audit.start()
    await audit.record([{"request_id": "answered", "decision": "ALLOW"}])
    await audit.close()
    ids = [json.loads(line)["request_id"] for line in path.read_text().splitlines()]
    assert ids == ["answered"]

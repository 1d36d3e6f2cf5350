"""A worker's end of the supervisor's socket: a reload asked of the others while the
supervisor goes away is reported as not confirmed, never as agreed."""

from __future__ import annotations

import asyncio
import json
import socket

from verdict.worker_link import SupervisorLink


async def test_a_pending_reload_is_unconfirmed_when_the_supervisor_goes_away() -> None:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    gone: list[bool] = []
    link = SupervisorLink(reader, writer, None, lambda: gone.append(True), lambda level: None)
    running = asyncio.ensure_future(link.run())
    asking = asyncio.ensure_future(link.reload_others(frozenset({"lending"}), 5.0))
    await asyncio.sleep(0.05)
    sent = json.loads(theirs.recv(4096).decode().splitlines()[0])
    assert (sent["op"], sent["stores"]) == ("reload_all", ["lending"])
    theirs.close()  # the supervisor is gone before it answered
    report = await asyncio.wait_for(asking, 2)
    await asyncio.wait_for(running, 2)
    assert (dict(report.versions), report.missing) == ({}, (-1,))
    assert gone == [True]
    await link.close()

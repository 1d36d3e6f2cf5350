"""Revocation across replicas on a real Redis Cluster (3 masters + 3 replicas, three `verdict
serve` processes), attacked by a hostile environment: listener connections killed, a replica's
process paused, the store's master paused, a manual failover, a write lost with its master.

After a revoke through server A, B and C are hammered. Two rules are checked on every answer:
with ``min_entity_version`` = the revoke's version no ALLOW ever; without it, no ALLOW for a
call sent later than ``cache_grace_seconds`` after the revoke returned (the documented bound).
The longest stale window seen is printed."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.integration.cluster_deployment import (
    Server,
    cluster_servers,
    initial_entities,
    tenant_stores,
    user,
    version_key,
    view,
    write_stores,
)
from tests.redis_support import (
    RedisProcess,
    cluster_master_of,
    cluster_replicas_of,
    redis_cluster,
    wait_replicated,
)
from verdict.client import VerdictClient

GRACE = 1.0  # the servers' cache_grace_seconds (short, so each attack is short)
HAMMER_AFTER = GRACE + 0.5  # how long B and C are asked after the revoke returned
MAX_CALLS = 4000  # per hammer thread, whatever happens


@dataclass
class Cluster:
    """The Redis nodes, three stores (one per master) and three servers."""

    nodes: list[RedisProcess]
    stores: list[str]
    servers: list[Server]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters + 3 replicas (1 s node timeout); three servers with a 1 s cache grace."""
    workdir = tmp_path_factory.mktemp("attack-scale-out")
    with (
        pytest.MonkeyPatch.context() as patch,
        redis_cluster(workdir / "redis", masters=3, replicas=1, node_timeout_ms=1000) as nodes,
    ):
        patch.setenv("VERDICT_CACHE_GRACE_SECONDS", str(GRACE))
        stores = tenant_stores(nodes, 3)
        seed = cluster_master_of(nodes, version_key(stores[1]))  # not the first store's master
        root = write_stores(workdir / "stores", stores)
        with cluster_servers(root, seed.url, workdir, 3) as servers:
            for store in stores:
                servers[0].client.put_entities(initial_entities(), store=store)
            yield Cluster(nodes, stores, servers)


@dataclass
class Hammer:
    """Threads asking B and C whether ``name`` may view, with and without the revoke's version."""

    servers: list[Server]
    store: str
    name: str
    revoke_version: int = 0  # 0 until the revoke returned
    revoked_at: float = 0.0
    # (server index, min version used, sent, received, answer)
    answers: list[tuple[int, int, float, float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Hammer:
        for index in range(len(self.servers)):
            for by_version in (False, True):
                thread = threading.Thread(target=self._run, args=(index, by_version), daemon=True)
                self._threads.append(thread)
                thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, index: int, by_version: bool) -> None:
        server = self.servers[index]
        for _ in range(MAX_CALLS):
            if self._stop.is_set():
                return
            version = self.revoke_version if by_version else 0
            if by_version and version == 0:
                time.sleep(0.002)
                continue
            sent = time.monotonic()
            got = server.decide(view(self.store, self.name, version))
            self.answers.append((index, version, sent, time.monotonic(), got))

    def wrong_allows(self, grace: float) -> list[tuple[int, int, float, float, str]]:
        """ALLOWs that break a rule: by the revoke's version, or sent after the grace ran out."""
        assert self.revoke_version, "the revoke never returned"
        return [
            a
            for a in self.answers
            if a[4] == "allow" and (a[1] >= self.revoke_version or a[2] > self.revoked_at + grace)
        ]

    def covers_the_grace(self, grace: float) -> bool:
        """Whether every server answered calls sent after the grace ran out (the rule ran)."""
        late = {a[0] for a in self.answers if a[2] > self.revoked_at + grace}
        return late == set(range(len(self.servers)))

    def stale_window(self) -> float:
        """From the revoke's return to the last ALLOW sent after it (0: none)."""
        late = [a[2] - self.revoked_at for a in self.answers if a[4] == "allow"]
        return max([0.0, *(t for t in late if t > 0)])


def grant(cluster: Cluster, store: str, name: str) -> None:
    """Grant ``name`` the viewer role through A; B and C read it, then answer from their caches."""
    a, *others = cluster.servers
    written = a.client.put_entities([user(name, True)], store=store)
    for server in others:
        assert server.decide(view(store, name, written.version)) == "allow"
        deadline = time.monotonic() + 10
        while server.decide(view(store, name)) != "allow":
            assert time.monotonic() < deadline, "the grant never reached a cache"
            time.sleep(0.01)
    for server in others:  # the entry is settled in each cache now
        for _ in range(5):
            assert server.decide(view(store, name)) == "allow"


def revoke_under_attack(
    cluster: Cluster,
    store: str,
    name: str,
    attack: Callable[[], None] = lambda: None,
    after: Callable[[], None] = lambda: None,
) -> Hammer:
    """Grant, then revoke through A while B and C are hammered; ``attack`` runs just before
    the revoke, ``after`` once it returned. Returns the hammer with every answer."""
    grant(cluster, store, name)
    a, *others = cluster.servers
    with (
        VerdictClient(f"127.0.0.1:{a.port}", timeout=20, retries=0) as writer,
        Hammer(others, store, name) as hammer,
    ):
        time.sleep(0.1)  # the hammer is warm: its first answers are cache hits
        attack()
        written = writer.put_entities([user(name, False)], store=store)
        hammer.revoked_at = time.monotonic()
        hammer.revoke_version = written.version
        after()
        end = time.monotonic() + HAMMER_AFTER
        while time.monotonic() < end and len(hammer.answers) < 4 * MAX_CALLS:
            time.sleep(0.05)
    for server in others:  # everyone agrees in the end
        assert server.decide(view(store, name, written.version)) == "deny"
        assert server.decide(view(store, name)) == "deny"
    assert hammer.covers_the_grace(GRACE)
    return hammer


def report(what: str, hammer: Hammer) -> None:
    """Print what the hammer saw after the revoke, and the longest stale window."""
    after = [a for a in hammer.answers if a[2] >= hammer.revoked_at]
    kinds = sorted({a[4] for a in after})
    print(
        f"\n{what}: {len(hammer.answers)} answers ({len(after)} after the revoke: {kinds}); "
        f"last stale ALLOW {hammer.stale_window():.3f} s after the revoke returned"
    )


def master_of(cluster: Cluster, store: str) -> RedisProcess:
    """The node that masters ``store``'s slot now."""
    return cluster_master_of(cluster.nodes, version_key(store))


def test_a_revoke_is_never_allowed_by_its_version_and_not_past_the_grace(
    cluster: Cluster,
) -> None:
    """No disturbance: the baseline of the two rules (and the stale window, normally ~0)."""
    hammer = revoke_under_attack(cluster, cluster.stores[0], "u6")
    report("no attack", hammer)
    assert hammer.wrong_allows(GRACE) == []


def test_listener_connections_killed_just_before_the_revoke(cluster: Cluster) -> None:
    """CLIENT KILL of every pub/sub connection on every master (each server's listener) right
    before the revoke: the caches stop at once and start afresh; no rule is broken."""
    running = [n for n in cluster.nodes if n.process is not None]

    def kill_listeners() -> None:
        for node in running:
            node.cli("CLIENT", "KILL", "TYPE", "pubsub")

    hammer = revoke_under_attack(cluster, cluster.stores[1], "u6", kill_listeners)
    report("listeners killed", hammer)
    assert hammer.wrong_allows(GRACE) == []


def test_a_server_paused_across_the_revoke_answers_no_stale_allow_when_resumed(
    cluster: Cluster,
) -> None:
    """SIGSTOP server B before the revoke and SIGCONT it longer than the grace after: the
    calls that waited in its sockets are answered after the resume, from Redis (its cache's
    proof has run out), never ALLOW."""
    b = cluster.servers[1]
    resumed: list[float] = []

    def pause() -> None:
        os.kill(b.process.pid, signal.SIGSTOP)

    def resume() -> None:
        time.sleep(GRACE + 0.3)
        resumed.append(time.monotonic())
        os.kill(b.process.pid, signal.SIGCONT)

    try:
        hammer = revoke_under_attack(cluster, cluster.stores[2], "u6", pause, resume)
    finally:
        os.kill(b.process.pid, signal.SIGCONT)
    report("server B paused", hammer)
    assert hammer.wrong_allows(GRACE) == []
    # Sent while B was stopped, after the revoke returned: answered once B runs again, by
    # then past the grace of its last proof. (A call sent before the revoke may come back
    # after the resume with an ALLOW decided before the pause: that one was concurrent.)
    late = [a for a in hammer.answers if a[0] == 0 and a[2] > hammer.revoked_at]
    assert [a for a in late if a[2] < resumed[0]]  # some were held by the pause
    assert [a for a in late if a[4] == "allow"] == []


def test_the_stores_master_paused_while_the_revoke_waits(cluster: Cluster) -> None:
    """SIGSTOP the store's master (shorter than the node timeout: no failover) and revoke
    meanwhile: the write waits for the master, the caches lose their proof (no pong), and
    nothing is allowed by the revoke's version or past the grace once it returned."""
    store = cluster.stores[0]
    master = master_of(cluster, store)
    assert master.process is not None
    pid = master.process.pid

    def pause() -> None:
        os.kill(pid, signal.SIGSTOP)
        threading.Timer(0.6, os.kill, (pid, signal.SIGCONT)).start()

    try:
        hammer = revoke_under_attack(cluster, store, "u5", pause)
    finally:
        os.kill(pid, signal.SIGCONT)
    report("store's master paused", hammer)
    assert hammer.wrong_allows(GRACE) == []


def test_a_manual_failover_just_before_the_revoke(cluster: Cluster) -> None:
    """CLUSTER FAILOVER on the store's replica (graceful: the old master's connections stay
    open, it turns replica): the revoke lands on the new master, whose publishes the listeners
    do not hear first hand until they notice the change. No rule is broken."""
    store = cluster.stores[1]
    master = master_of(cluster, store)
    (replica,) = cluster_replicas_of(cluster.nodes, master)
    wait_replicated(master, replica)

    def failover() -> None:
        assert replica.cli("CLUSTER", "FAILOVER").strip() == "OK"
        deadline = time.monotonic() + 20
        while master_of(cluster, store) is not replica:
            assert time.monotonic() < deadline, "the manual failover did not complete"
            time.sleep(0.005)

    hammer = revoke_under_attack(cluster, store, "u4", failover)
    report("manual failover", hammer)
    assert hammer.wrong_allows(GRACE) == []


def lose_a_write(cluster: Cluster, store: str, name: str) -> tuple[int, RedisProcess]:
    """Revoke ``name`` through A on a master whose replica is paused, kill the master, and
    promote the replica (which never received the revoke). Returns the revoke's version."""
    master = master_of(cluster, store)
    (replica,) = cluster_replicas_of(cluster.nodes, master)
    wait_replicated(master, replica)
    assert replica.process is not None
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        # Paused alone, the replica's kernel would still take in the stream; cut the link
        # too, so the revoke never leaves the master (the paused replica cannot reconnect).
        master.cli("CLIENT", "KILL", "TYPE", "replica")
        with VerdictClient(f"127.0.0.1:{cluster.servers[0].port}", timeout=10) as writer:
            revoked = writer.put_entities([user(name, False)], store=store).version
        for server in cluster.servers:  # acknowledged and read by every server
            assert server.decide(view(store, name, revoked)) == "deny"
        master.stop()  # SIGKILL before the paused replica could receive the revoke
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    assert replica.cli("CLUSTER", "FAILOVER", "TAKEOVER").strip() == "OK"
    deadline = time.monotonic() + 30
    while master_of(cluster, store) is not replica:
        assert time.monotonic() < deadline, "the replica was not promoted"
        time.sleep(0.02)
    return revoked, replica


def answers_by_version(cluster: Cluster, store: str, name: str, version: int) -> set[str]:
    """What every server answers for ``name`` at ``version`` once the cluster serves again."""
    seen: set[str] = set()
    for server in cluster.servers:
        deadline = time.monotonic() + 20
        while (got := server.decide(view(store, name, version))) in ("UNAVAILABLE",):
            assert time.monotonic() < deadline, "the store never came back"
            time.sleep(0.05)
        seen.add(got)
    return seen


def test_a_revoke_lost_with_its_master_is_never_met_by_a_later_version(cluster: Cluster) -> None:
    """Asynchronous replication: a revoke acknowledged by a master that died before its
    replica received it is gone after the failover (Redis's loss, documented). Asked with the
    revoke's version, every server refuses (FAILED_PRECONDITION), and still refuses after a
    later write of another entity on the promoted master: that write's version is above the
    revoke's (versions follow the clock), and used to meet it with the older state in which
    the grant is still there (ALLOW). Now the write finds another replication id and starts a
    new epoch, so the lost version is refused as replaced."""
    store, name = cluster.stores[2], "u7"
    grant(cluster, store, name)
    revoked, _ = lose_a_write(cluster, store, name)
    assert answers_by_version(cluster, store, name, revoked) == {"FAILED_PRECONDITION"}
    # The loss is real: without a version, the grant is back.
    assert {s.decide(view(store, name)) for s in cluster.servers} == {"allow"}
    cluster.servers[0].client.put_entities([user("u0", True)], store=store)
    assert answers_by_version(cluster, store, name, revoked) == {"FAILED_PRECONDITION"}


def move_slot(cluster: Cluster, store: str) -> RedisProcess:
    """Reshard: move ``store``'s slot (all its keys) to another master; returns that master."""
    source = master_of(cluster, store)
    masters = {master_of(cluster, s).port: master_of(cluster, s) for s in cluster.stores}
    target = next(m for port, m in masters.items() if port != source.port)
    slot = source.cli("CLUSTER", "KEYSLOT", version_key(store)).strip()
    source_id = source.cli("CLUSTER", "MYID").strip()
    target_id = target.cli("CLUSTER", "MYID").strip()
    assert target.cli("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id).strip() == "OK"
    assert source.cli("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id).strip() == "OK"
    keys = source.cli("CLUSTER", "GETKEYSINSLOT", slot, "1000").split()
    assert keys
    migrated = source.cli("MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys)
    assert migrated.strip() == "OK"
    for node in (target, source, *masters.values()):
        node.cli("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    deadline = time.monotonic() + 20
    while master_of(cluster, store) is not target:
        assert time.monotonic() < deadline, "the slot never moved"
        time.sleep(0.01)
    return target


def test_a_reshard_of_the_stores_slot_just_before_the_revoke(cluster: Cluster) -> None:
    """The store's slot moves to another master (a live reshard: every connection stays open)
    right before the revoke: the revoke is published by a master that the listeners took for
    another store's until they notice the new slot map. No rule is broken."""
    store = cluster.stores[0]
    moved: list[RedisProcess] = []
    hammer = revoke_under_attack(
        cluster, store, "u3", lambda: moved.append(move_slot(cluster, store))
    )
    report("reshard", hammer)
    assert master_of(cluster, store) is moved[0]
    assert hammer.wrong_allows(GRACE) == []


def test_a_revoke_lost_to_a_takeover_while_the_old_master_lives(cluster: Cluster) -> None:
    """CLUSTER FAILOVER TAKEOVER on a replica that missed the revoke, the old master alive
    (the listeners' connections to it stay open; it turns replica and resyncs, dropping the
    revoke). B and C are hammered with the revoke's version throughout, across a later write
    on the new master: never an ALLOW by that version."""
    store, name = cluster.stores[1], "u2"
    grant(cluster, store, name)
    master = master_of(cluster, store)
    (replica,) = cluster_replicas_of(cluster.nodes, master)
    wait_replicated(master, replica)
    assert replica.process is not None
    os.kill(replica.process.pid, signal.SIGSTOP)
    # The replica may not sync from this master again (the cluster bus is not affected).
    assert master.cli("ACL", "SETUSER", "default", "-psync", "-sync", "-replconf").strip() == "OK"
    try:
        master.cli("CLIENT", "KILL", "TYPE", "replica")
        with VerdictClient(f"127.0.0.1:{cluster.servers[0].port}", timeout=10) as writer:
            revoked = writer.put_entities([user(name, False)], store=store).version
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)
    for server in cluster.servers:
        assert server.decide(view(store, name, revoked)) == "deny"
    with Hammer(cluster.servers[1:], store, name) as during:
        during.revoke_version, during.revoked_at = revoked, time.monotonic()
        assert replica.cli("CLUSTER", "FAILOVER", "TAKEOVER").strip() == "OK"
        deadline = time.monotonic() + 30
        while "master_link_status:up" not in master.cli("INFO", "replication"):
            assert time.monotonic() < deadline, "the old master never followed the new one"
            time.sleep(0.02)
    master.cli("ACL", "SETUSER", "default", "+@all")  # a replica now: it syncs from the new one
    with Hammer(cluster.servers[1:], store, name) as across:  # a later write, its version above
        across.revoke_version, across.revoked_at = revoked, time.monotonic()
        time.sleep(0.3)
        written = cluster.servers[0].client.put_entities([user("u0", True)], store=store)
        assert written.version > revoked
        time.sleep(0.7)
    by_version = [a for a in during.answers + across.answers if a[1] == revoked]
    print(f"\ntakeover: by the lost revoke's version {sorted({a[4] for a in by_version})}")
    assert [a for a in across.answers if a[1] == revoked and a[2] > across.revoked_at + 0.5]
    assert [a for a in by_version if a[4] == "allow"] == []
    assert {s.decide(view(store, name)) for s in cluster.servers} == {"allow"}  # lost

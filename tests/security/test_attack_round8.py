"""Attack round 8: a hostile operator racing hot reloads of a running `verdict serve`.

Every test runs a real server process (one worker, JSON logs to a file) over a small strict
store, with decisions flowing from gRPC clients while the store's files are cut, swapped,
replaced or hidden. Findings are tests asserting the correct behaviour (a strict xfail where
not fixed); the other tests pin defences that held. See docs/security.md, "Attack round 8".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from tests.processes import free_port
from tests.security.serve_process import serve_command, wait_serving
from verdict._gen.verdict.v1 import admin_pb2 as apb
from verdict._gen.verdict.v1 import admin_pb2_grpc as apb_grpc
from verdict._gen.verdict.v1 import authorization_pb2 as pb
from verdict._gen.verdict.v1 import authorization_pb2_grpc as pb_grpc
from verdict.client import build_request
from verdict.policy.loader import MAX_STORE_NAMES, store_version

CHANGE = apb.PolicyStoreState.Change
ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY

SCHEMA = """entity User { suspended: Bool };
entity Doc;
action view appliesTo { principal: User, resource: Doc };
"""
PERMIT = '@id("members")\npermit (principal, action == Action::"view", resource);\n'
# Cut anywhere inside, each file is no longer valid: the forbid's condition is long enough.
GUARD = (
    '@id("no-suspended")\n'
    "forbid (principal, action, resource)\n"
    "when { principal has suspended && principal.suspended == true };\n"
)
BLOCK = '@id("block")\nforbid (principal == ?principal, action, resource);\n'
LINKS = [{"id": "block-bob", "template": "block", "values": {"?principal": 'User::"bob"'}}]


def people(*, padding: int = 0, alice_suspended: bool = False, extra: int = 0) -> str:
    """entities.json: mallory suspended (every whole state denies her), bob blocked by a link,
    alice free unless told; ``extra`` users (~330 bytes each) make the file large."""
    users = [("mallory", True), ("bob", False), ("alice", alice_suspended)]
    users += [(f"filler-{i:07d}-{'x' * 280}", False) for i in range(extra)]
    entities = [
        {"uid": {"type": "User", "id": name}, "attrs": {"suspended": flag}, "parents": []}
        for name, flag in users
    ]
    entities.append({"uid": {"type": "Doc", "id": "d1"}, "attrs": {}, "parents": []})
    return json.dumps(entities) + " " * padding


def write_store(stores: Path) -> Path:
    """The store "docs": permit all views, forbid the suspended, a link blocking bob."""
    store = stores / "docs"
    (store / "guards").mkdir(parents=True)
    (store / "members.cedar").write_text(PERMIT)
    (store / "guards" / "guard.cedar").write_text(GUARD)
    (store / "block.cedar").write_text(BLOCK)
    (store / "links.json").write_text(json.dumps(LINKS))
    (store / "schema.cedarschema").write_text(SCHEMA)
    (store / "store.toml").write_text('validation = "strict"\n')
    (store / "entities.json").write_text(people())
    return store


def write_atomically(path: Path, data: str) -> None:
    """Replace ``path`` through a rename (what a careful operator does)."""
    staged = path.parent / f".{path.name}.tmp"
    staged.write_text(data)
    os.replace(staged, path)


def write_in_place(path: Path, data: bytes) -> None:
    """Rewrite ``path`` in place (``O_TRUNC``, then the bytes), as `cp` or ``>`` do."""
    with path.open("r+b") as handle:
        handle.truncate(0)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class Served:
    """A running server: its process, ports and JSON log."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path
    store: Path

    def events(self, name: str) -> list[dict[str, object]]:
        """The log's records of event ``name`` so far."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if f'"{name}"' in line:
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    def sighup_and_wait(self, *events: str, seconds: float = 10) -> dict[str, object]:
        """SIGHUP, then the first new record of one of ``events`` (the reload's outcome)."""
        before = {event: len(self.events(event)) for event in events}
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for event, count in before.items():
                found = self.events(event)
                if len(found) > count:
                    return found[count]
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
            time.sleep(0.02)
        raise AssertionError(f"none of {events} within {seconds} s: {self.tail()}")

    def metric(self, text: str) -> float:
        """The value of the metrics line starting with ``text`` (0 when absent)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(text):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def tail(self) -> str:
        """The end of the log, for failure messages."""
        return self.log.read_text(errors="replace")[-3000:]


# Root without the capabilities that bypass file permissions (a root server would read a
# chmod 000 file anyway): what an unprivileged server meets.
NO_DAC = [
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
]


@contextmanager
def serving(
    tmp_path: Path, *, watch: bool = False, permissions_hold: bool = False
) -> Iterator[tuple[Served, grpc.Channel]]:
    """`verdict serve --workers 1` over a fresh "docs" store; killed after the block. With
    ``permissions_hold`` and the tests running as root, the server runs without the
    capabilities that bypass file permissions, so that ``chmod 000`` holds against it."""
    store = write_store(tmp_path / "stores")
    port, metrics_port = free_port(), free_port()
    log = tmp_path / f"serve-{port}.log"
    command = serve_command(store.parent, port, "--log-format", "json", "--workers", "1")
    command += ["--metrics-listen", f"127.0.0.1:{metrics_port}"]
    if permissions_hold and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions cannot hold")
        command = [setpriv, *NO_DAC, *command]
    env = {
        **os.environ,
        "VERDICT_SHUTDOWN_GRACE_SECONDS": "1",
        "VERDICT_POLICY_WATCH": "true" if watch else "false",
        "VERDICT_DEFAULT_STORE": "docs",
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stderr=sink, env=env)
    try:
        wait_serving(process, port, log)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(process, port, metrics_port, log, store), channel
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def decide(channel: grpc.Channel, principal: str) -> pb.IsAuthorizedResponse:
    """``User::principal`` views ``Doc::"d1"`` in the store "docs"."""
    request = build_request(f'User::"{principal}"', 'Action::"view"', 'Doc::"d1"', store="docs")
    reply: pb.IsAuthorizedResponse = pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(
        request, timeout=10
    )
    return reply


def reload(channel: grpc.Channel) -> apb.PolicyStoreState:
    """AdminService/ReloadPolicies; the state of "docs"."""
    reply = apb_grpc.AdminServiceStub(channel).ReloadPolicies(
        apb.ReloadPoliciesRequest(), timeout=20
    )
    return next(s for s in reply.stores if s.policy_store_id == "docs")


@dataclass
class Answers:
    """Decisions flowing from ``callers`` threads until stopped: (principal, decision,
    policy version, seconds taken) each, and any error."""

    port: int
    principals: tuple[str, ...] = ("mallory", "bob", "alice")
    callers: int = 4
    seen: list[tuple[str, int, str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Answers:
        for n in range(self.callers):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, n: int) -> None:
        with grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            i = n
            while not self._stop.is_set():
                principal = self.principals[i % len(self.principals)]
                i += 1
                started = time.monotonic()
                try:
                    reply = decide(channel, principal)
                except grpc.RpcError as exc:
                    self.errors.append(f"{principal}: {exc.code()} {exc.details()}")
                    continue
                took = time.monotonic() - started
                self.seen.append((principal, reply.decision, reply.policy_version, took))

    def wrongly_allowed(self, *denied: str) -> list[tuple[str, int, str, float]]:
        """Answers that ALLOWed one of ``denied``."""
        return [a for a in self.seen if a[0] in denied and a[1] == ALLOW]


# --- 1. files rewritten in place while a reload reads them -----------------------------------


@pytest.mark.parametrize(
    "relative", ["entities.json", "guards/guard.cedar", "schema.cedarschema", "links.json"]
)
def test_a_file_half_rewritten_in_place_is_refused_and_the_last_good_version_serves(
    tmp_path: Path, relative: str
) -> None:
    """Each file cut in half in place (the write paused), SIGHUP, then the write finished and
    SIGHUP again. The half file is no valid state: the reload fails, says so in the log and
    the metrics, the last good version serves throughout; the finished file is then served.
    mallory and bob are denied by every whole state: never ALLOW."""
    with serving(tmp_path) as (served, channel):
        path = served.store / relative
        first = decide(channel, "alice").policy_version
        whole = path.read_bytes()
        new = whole.rstrip(b"\n") + b"\n\n" if relative != "entities.json" else whole + b"  "
        failed_before = served.metric('verdict_policy_reloads_total{result="failed"}')
        with Answers(served.port) as answers:
            write_in_place(path, new[: len(new) // 2])
            failure = served.sighup_and_wait("policy_reload_failed")
            assert failure["serving"] == first
            assert any(relative.split("/")[-1] in str(p) for p in failure["problems"])  # type: ignore[attr-defined]
            assert decide(channel, "alice").policy_version == first
            assert decide(channel, "mallory").decision == DENY
            write_in_place(path, new)
            served.sighup_and_wait("policy_reloaded")
        assert served.metric('verdict_policy_reloads_total{result="failed"}') == failed_before + 1
        final = decide(channel, "alice")
        assert final.decision == ALLOW
        expected = first if relative == "entities.json" else store_version(served.store)
        assert final.policy_version == expected
        assert answers.errors == []
        assert len(answers.seen) > 10
        assert answers.wrongly_allowed("mallory", "bob") == []
        assert {a[2] for a in answers.seen} <= {first, expected}
        assert "Traceback" not in served.log.read_text(errors="replace")


def test_a_policy_file_truncated_in_place_for_a_rewrite_is_not_served(tmp_path: Path) -> None:
    """guard.cedar truncated to zero bytes (the first step of every in-place rewrite), a
    SIGHUP lands, then the same forbid is written back: mallory must stay denied.

    Was a strict xfail: the empty file is valid Cedar and the store was served without its
    forbid (ALLOW for mallory, whom the old and the new file both deny). An empty store file
    is now refused, and the last good version keeps serving. A rewrite paused at a
    statement-aligned prefix of a larger file stays undetectable (docs/security.md)."""
    with serving(tmp_path) as (served, channel):
        path = served.store / "guards" / "guard.cedar"
        whole = path.read_bytes()
        first = decide(channel, "alice").policy_version
        write_in_place(path, b"")
        failure = served.sighup_and_wait("policy_reload_failed", "policy_reloaded")
        assert failure["event"] == "policy_reload_failed"
        assert any("empty file" in str(p) for p in failure["problems"])  # type: ignore[attr-defined]
        assert decide(channel, "mallory").decision == DENY
        assert decide(channel, "alice").policy_version == first
        write_in_place(path, whole)
        assert decide(channel, "mallory").decision == DENY


# --- 2. entities.json swapped between a small and a huge version ------------------------------


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_entities_swapped_between_small_and_huge_serve_whole_states_only(
    tmp_path: Path,
) -> None:
    """entities.json swapped (renames) six times between 3 users and ~60,000 (~20 MB), each
    swap reloaded by SIGHUP while 4 callers decide. mallory and bob are denied in every
    version: never ALLOW, no error. Decisions keep flowing during each huge reload (the
    slowest stays bounded), resident memory does not grow with the number of swaps, and the
    last file is what is served: alice suspended there, so DENY."""
    huge = people(extra=60_000)
    small = people(padding=1)
    assert len(huge) > 20_000_000
    with serving(tmp_path) as (served, channel):
        path = served.store / "entities.json"
        rss: list[int] = []
        with Answers(served.port) as answers:
            for round_ in range(6):
                write_atomically(path, huge if round_ % 2 == 0 else small + " " * round_)
                served.sighup_and_wait("policy_reloaded", seconds=20)
                rss.append(rss_kib(served.process.pid))
            write_atomically(path, people(alice_suspended=True))
            served.sighup_and_wait("policy_reloaded", seconds=20)
            time.sleep(0.2)  # answers under the last state too
        assert answers.errors == []
        assert answers.wrongly_allowed("mallory", "bob") == []
        assert len(answers.seen) > 100
        slowest = max(a[3] for a in answers.seen)
        assert slowest < 5.0, f"a decision waited {slowest:.2f} s during a reload"
        # The third huge version holds no more than the first did, plus slack (no leak).
        # Measured: ~400 MB after the first huge load, up to ~1.4 GB after six (glibc arenas
        # keep freed memory; one arena plateaus at ~700 MB): bounded, not per swap.
        assert max(rss) < 2_500_000, rss
        assert decide(channel, "alice").decision == DENY
        assert decide(channel, "mallory").decision == DENY


def test_a_huge_entities_reload_does_not_stall_decisions(tmp_path: Path) -> None:
    """One reload of a 22 MB entities.json while 4 callers decide: no decision may wait more
    than 600 ms (a cache-hit decision takes ~1 ms). Cedar's check of the file held the GIL for
    ~1.8 s and decisions waited 1.0-1.4 s; it now runs with the GIL released: 0.27-0.31 s
    with a CPU hog beside the test, under 0.25 s without (the bound leaves room for a busy
    machine, and none for the stall)."""
    with serving(tmp_path) as (served, _):
        with Answers(served.port) as answers:
            time.sleep(0.2)
            write_atomically(served.store / "entities.json", people(extra=60_000))
            served.sighup_and_wait("policy_reloaded", seconds=20)
        assert answers.errors == []
        slowest = max(a[3] for a in answers.seen)
        assert slowest < 0.6, f"a decision waited {slowest:.2f} s during the reload"


# --- 3. a forbid removed and restored while decisions flow and reloads overlap ---------------


def test_a_forbid_removed_and_restored_in_quick_succession_answers_by_whole_states(
    tmp_path: Path,
) -> None:
    """guard.cedar swapped A (forbid) -> B (no forbid) -> A twenty times, with SIGHUPs,
    ReloadPolicies calls and the file watcher all reloading meanwhile. Each answer names the
    policy version it used: under A mallory is DENY, under B (a whole state too) ALLOW; no
    answer may carry any other version or the other state's decision. Once the edits stop,
    A is served."""
    with serving(tmp_path, watch=True) as (served, channel):
        path = served.store / "guards" / "guard.cedar"
        version_a = decide(channel, "mallory").policy_version
        write_atomically(path, "// the guard is lifted\n")
        version_b = store_version(served.store)
        write_atomically(path, GUARD)
        assert store_version(served.store) == version_a
        expected = {version_a: DENY, version_b: ALLOW}
        stop = threading.Event()

        def reload_often() -> None:
            with grpc.insecure_channel(
                f"127.0.0.1:{served.port}", options=[("grpc.use_local_subchannel_pool", 1)]
            ) as own:
                while not stop.is_set():
                    reload(own)

        reloader = threading.Thread(target=reload_often, daemon=True)
        with Answers(served.port, principals=("mallory",)) as answers:
            reloader.start()
            for i in range(20):
                write_atomically(path, "// the guard is lifted\n")
                served.process.send_signal(signal.SIGHUP)
                time.sleep(0.005 * (i % 4))
                write_atomically(path, GUARD)
                if i % 3 == 0:
                    served.process.send_signal(signal.SIGHUP)
                time.sleep(0.02)
            stop.set()
            reloader.join(30)
        assert answers.errors == []
        assert len(answers.seen) > 50
        wrong = [a for a in answers.seen if expected.get(a[2]) != a[1]]
        assert wrong == []
        state = reload(channel)
        assert state.policy_version == version_a
        assert decide(channel, "mallory").decision == DENY
        assert "policy_reload_crashed" not in served.log.read_text(errors="replace")


# --- 4. files replaced by what is no file, or hidden ----------------------------------------


def fifo(path: Path) -> None:
    """Replace ``path`` by a FIFO nobody writes to."""
    path.unlink()
    os.mkfifo(path)


def folder(path: Path) -> None:
    """Replace ``path`` by an empty folder."""
    path.unlink()
    path.mkdir()


def link_to_zero(path: Path) -> None:
    """Replace ``path`` by a symbolic link to /dev/zero (endless bytes)."""
    path.unlink()
    path.symlink_to("/dev/zero")


def unreadable(path: Path) -> None:
    """Take every permission off ``path``."""
    path.chmod(0)


REPLACEMENTS: dict[str, Callable[[Path], None]] = {
    "fifo": fifo,
    "folder": folder,
    "dev-zero": link_to_zero,
    "chmod-000": unreadable,
}
FILES = ["entities.json", "guards/guard.cedar", "schema.cedarschema", "links.json", "store.toml"]


def test_files_replaced_by_fifos_folders_dev_zero_or_made_unreadable_fail_the_reload(
    tmp_path: Path,
) -> None:
    """Each of five files replaced in turn by a FIFO, a folder, a link to /dev/zero, or made
    unreadable (the server not running as root), then reloaded by ReloadPolicies and by
    SIGHUP: each reload fails within seconds naming the file, the last good version keeps
    serving (mallory and bob denied, alice allowed), no traceback; restored, it serves on."""
    with serving(tmp_path, permissions_hold=True) as (served, channel):
        good = decide(channel, "alice").policy_version
        with Answers(served.port, callers=2) as answers:
            for relative in FILES:
                path = served.store / relative
                original = path.read_bytes()
                for kind, replace in REPLACEMENTS.items():
                    replace(path)
                    started = time.monotonic()
                    state = reload(channel)
                    assert time.monotonic() - started < 5, (relative, kind)
                    assert state.change == CHANGE.FAILED, (relative, kind)
                    assert state.policy_version == good
                    shown = [f"{p.file}: {p.message}" for p in state.problems]
                    assert any(relative in p for p in shown), (relative, kind, shown)
                    served.sighup_and_wait("policy_reload_failed")
                    assert decide(channel, "alice").decision == ALLOW
                    if path.is_dir() and not path.is_symlink():
                        path.rmdir()
                    else:
                        path.unlink()
                    path.write_bytes(original)
                    assert reload(channel).policy_version == good
        assert answers.errors == []
        assert answers.wrongly_allowed("mallory", "bob") == []
        assert {a[2] for a in answers.seen} == {good}
        text = served.log.read_text(errors="replace")
        assert "Traceback" not in text
        assert "policy_reload_crashed" not in text


def test_a_link_to_a_policy_file_outside_the_stores_folder_is_refused(tmp_path: Path) -> None:
    """A link to a file outside the stores folder was followed (pinned here by round 8 as a
    deliberate rule); that let a store edit make the server read one of its secrets and
    quote its first token in a parse error. It is now refused unread: the reload fails naming
    the link, the last good version serves on, and nothing of the target is reported. A
    link inside the store folder still loads (ConfigMap mounts are such links)."""
    outside = tmp_path / "elsewhere.cedar"
    outside.write_text("TOPSECRET_TOKEN forbid (principal,")
    with serving(tmp_path) as (served, channel):
        first = decide(channel, "alice").policy_version
        (served.store / "outside.cedar").symlink_to(outside)
        refused = reload(channel)
        assert refused.change == CHANGE.FAILED
        assert [(p.file, p.message) for p in refused.problems] == [
            ("docs/outside.cedar", "a link to a file outside the store folder, refused")
        ]
        assert "TOPSECRET" not in served.log.read_text(errors="replace")
        assert decide(channel, "mallory").decision == DENY
        assert decide(channel, "alice").policy_version == first
        (served.store / "outside.cedar").unlink()
        inside = served.store / "..data" / "shared.cedar"
        inside.parent.mkdir()
        inside.write_text(GUARD.replace("no-suspended", "shared-guard"))
        (served.store / "shared.cedar").symlink_to("..data/shared.cedar")
        state = reload(channel)
        assert state.change == CHANGE.RELOADED
        assert state.policy_version == store_version(served.store)
        assert decide(channel, "mallory").decision == DENY
        assert decide(channel, "alice").decision == ALLOW


# --- 5. the walk of a store's folders ---------------------------------------------------------


def test_a_folder_of_forbids_made_unlistable_fails_the_reload_instead_of_dropping_them(
    tmp_path: Path,
) -> None:
    """``chmod 000`` on the folder holding the forbid (the server not running as root). The
    policy walk skipped a folder it could not list without a word: the store reloaded
    without the forbid and mallory, denied by the files as written, was ALLOWed. The reload
    must fail naming the folder, and the last good version keep serving."""
    with serving(tmp_path, permissions_hold=True) as (served, channel):
        good = decide(channel, "mallory")
        assert good.decision == DENY
        guards = served.store / "guards"
        guards.chmod(0)
        try:
            state = reload(channel)
            assert state.change == CHANGE.FAILED
            assert [(p.file, p.message) for p in state.problems] == [
                ("docs/guards", "cannot list the folder: Permission denied")
            ]
            mallory = decide(channel, "mallory")
            assert (mallory.decision, mallory.policy_version) == (DENY, good.policy_version)
            failure = served.sighup_and_wait("policy_reload_failed")
            assert failure["serving"] == good.policy_version
        finally:
            guards.chmod(0o755)
        assert reload(channel).change == CHANGE.UNCHANGED


def remove_tree(path: Path) -> None:
    """Remove ``path`` with everything below it. GNU rm walks iteratively, where shutil.rmtree
    (pytest's clean-up of old temporary folders included) raised RecursionError on a nest."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=True, timeout=60)


def nest(root: Path, depth: int) -> None:
    """``depth`` folders, one inside the other, below ``root`` (made by relative steps: the
    whole path is longer than one system call takes)."""
    descriptor = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("n", dir_fd=descriptor)
            inner = os.open("n", os.O_RDONLY, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
    finally:
        os.close(descriptor)


def test_deeply_nested_folders_in_one_store_do_not_end_every_reload(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """1,500 nested folders in store "docs". The recursive walk raised RecursionError out of
    the whole reload: every later reload of every store "crashed" (policy_reload_crashed), so
    a second tenant's new forbid was never applied, and ReloadPolicies failed INTERNAL. Now
    the walk is a loop: "docs" is unchanged and the other store reloads its forbid."""
    with serving(tmp_path) as (served, channel):
        other = served.store.parent / "other"
        shutil.copytree(served.store, other)
        assert reload(channel).change == CHANGE.UNCHANGED
        nest(served.store / "guards", 1_500)
        request.addfinalizer(lambda: remove_tree(served.store / "guards" / "n"))
        write_atomically(
            other / "members.cedar", PERMIT + "forbid (principal, action, resource);\n"
        )
        reply = apb_grpc.AdminServiceStub(channel).ReloadPolicies(
            apb.ReloadPoliciesRequest(), timeout=20
        )
        states = {s.policy_store_id: s for s in reply.stores}
        assert states["docs"].change == CHANGE.UNCHANGED
        assert states["other"].change == CHANGE.RELOADED
        other_alice = build_request('User::"alice"', 'Action::"view"', 'Doc::"d1"', store="other")
        assert pb_grpc.AuthorizationServiceStub(channel).IsAuthorized(other_alice).decision == DENY
        assert decide(channel, "alice").decision == ALLOW
        text = served.log.read_text(errors="replace")
        assert "policy_reload_crashed" not in text
        assert "Traceback" not in text


def test_a_store_holding_too_many_names_fails_at_once(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A store folder holding more names than MAX_STORE_NAMES (a dump copied in, or a store
    that is a link to ``/``) is refused by the walk as soon as it has listed that many,
    instead of holding the one reload thread every store shares; the last good serves."""
    with serving(tmp_path) as (served, channel):
        dump = served.store / "dump"
        dump.mkdir()
        request.addfinalizer(lambda: remove_tree(dump))
        for i in range(MAX_STORE_NAMES + 1):
            os.close(os.open(dump / f"{i}", os.O_CREAT | os.O_WRONLY, stat.S_IRUSR))
        started = time.monotonic()
        state = reload(channel)
        assert time.monotonic() - started < 5
        assert state.change == CHANGE.FAILED
        assert "files and folders below the store" in state.problems[0].message
        assert decide(channel, "mallory").decision == DENY

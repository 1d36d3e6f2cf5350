"""A store's version is the hash of exactly the bytes its policies were parsed from, however
its files change while it loads (an editor saving, a ConfigMap swap)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from tests.conftest import POLICIES
from verdict.errors import PolicyLoadError
from verdict.files import pinned_reads, read_text
from verdict.policy.loader import load_store, store_version

FREEZE = '@id("freeze")\nforbid (principal, action, resource);\n'


def test_a_pinned_block_reads_each_file_once(tmp_path: Path) -> None:
    """Inside the block a changed or removed file still reads as it first did; outside, as
    it is now."""
    path = tmp_path / "p.cedar"
    path.write_text("first")
    with pinned_reads():
        assert read_text(path) == "first"
        path.write_text("second")
        assert read_text(path) == "first"
        path.unlink()
        assert read_text(path) == "first"
    path.write_text("third")
    assert read_text(path) == "third"


def test_the_version_of_a_load_matches_what_it_parsed_while_a_file_flips(
    tmp_path: Path,
) -> None:
    """A thread adds and removes freeze.cedar as fast as it can while the store loads 150
    times: each snapshot has the freeze policy exactly when its version is the frozen one
    (unpinned, a load could parse the file yet hash the folder without it: A, B, A)."""
    root = tmp_path / "lending"
    shutil.copytree(POLICIES / "lending", root)
    freeze = root / "freeze.cedar"
    plain = store_version(root)
    freeze.write_text(FREEZE)
    frozen = store_version(root)
    stop = threading.Event()

    def flip() -> None:
        staged = root / ".freeze.tmp"
        while not stop.is_set():
            staged.write_text(FREEZE)
            os.replace(staged, freeze)  # atomic, as editors and kubelet do
            freeze.unlink(missing_ok=True)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        seen = set()
        for _ in range(150):
            try:
                snapshot = load_store(root)
            except PolicyLoadError:  # listed, then gone before it was read: nothing served
                continue
            assert snapshot.version in (plain, frozen)
            assert ("freeze" in snapshot.policies) == (snapshot.version == frozen)
            seen.add(snapshot.version)
    finally:
        stop.set()
        flipper.join()
    assert seen  # loads went through while the file flipped

"""Upgrading dnpfs keeps the embedded store: a store made by the previous
release (record bytes inside SQLite, commit 1142c2b) is moved to segment
files at the first mount, and readers carry on where they were.

The old store is made by the old release's own code, taken from this
checkout's git history and mounted as users mounted it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from dnpfs.backends.base import MAX_DELIVERIES
from dnpfs.backends.sqlite import records_path

from ..mount import ROOT, Mount
from ..semantics.test_queue import SLOW_WORKER
from ..util import STRACE, run, spawn, wait_for

PREVIOUS = "1142c2b"  # the last release that kept record bytes in the records table


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory):
    """A folder holding the previous release's dnpfs package."""
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS}^{{commit}}"],
                      capture_output=True).returncode != 0:
        shallow = subprocess.run(["git", "-C", str(ROOT), "rev-parse",
                                  "--is-shallow-repository"], capture_output=True, text=True)
        pytest.skip(f"commit {PREVIOUS} (the previous store layout) is not in this checkout's"
                    f" history (shallow: {shallow.stdout.strip() or 'not a git checkout'});"
                    " a full clone has it")
    folder = tmp_path_factory.mktemp("previous")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS, "dnpfs"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def old_mount(tmp_path, folder, store) -> Mount:
    # Run from the old release's folder: `python -m dnpfs` imports dnpfs from
    # the working directory first (and so does the allocator's re-exec).
    def wrap(argv):
        return ["sh", "-c", 'cd "$0" && exec "$@"', str(folder), *argv]
    return Mount.under(tmp_path, "old", ["--store", str(store)], wrap=wrap)


def columns(store) -> set[str]:
    """The columns of the records table (closed at once: an open connection
    of the test would count as a daemon using the store)."""
    with contextlib.closing(sqlite3.connect(records_path(store))) as db:
        return {row[1] for row in db.execute("PRAGMA table_info(records)")}


SESSION_1 = b"".join(b"first session, line %d\n" % i for i in range(300))
SESSION_2 = b"second session, still open\n"
OTHER = b"another pipe\n" * 1000


def make_old_store(tmp_path, folder, store) -> bytes:
    """Pipes and records as the previous release left them: one ended
    session, one open when the daemon stopped, a group's cursor mid-pipe.
    Returns what that group read."""
    old = old_mount(tmp_path, folder, store).start()
    try:
        os.mkfifo(old / "p")
        os.mkfifo(old / "q")
        with open(old / "p", "wb", buffering=0) as w:
            w.write(SESSION_1[:5000])
            w.write(SESSION_1[5000:])
        with open(old / "q", "wb", buffering=0) as w:
            w.write(OTHER)
        fd = os.open(old / "p@g", os.O_RDONLY)
        try:
            got = os.read(fd, 1234)
        finally:
            os.close(fd)
        # A job that killed its worker MAX_DELIVERIES times: in flight with its
        # delivery count, set aside at its next delivery.
        os.mkfifo(old / "jobs")
        with open(old / "jobs", "w") as w:
            w.write("poison\n")
            w.flush()
            w.write("fine\n")
        for n in range(MAX_DELIVERIES):
            out = tmp_path / f"victim{n}.out"
            victim = spawn(["bash", "-c", SLOW_WORKER, "w", str(out), str(old / "jobs")],
                           start_new_session=True)
            wait_for(lambda: out.exists() and out.read_text() == "poison\n", timeout=60,
                     what=f"delivery {n + 1} of the poison line")
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
        writer = open(old / "p", "wb", buffering=0)
        writer.write(SESSION_2)
        os.fsync(writer.fileno())
        old.stop()
        try:
            writer.close()
        except OSError:
            pass
    finally:
        old.stop()
    assert "data" in columns(store), "the old release did not make a store of the old layout"
    return got


def check_upgraded(make_mount, store, got: bytes) -> None:
    new = make_mount(name="new")
    log = new.log_text()
    assert "moved to segment files: 3 pipes" in log, log
    # The group carries on at its cursor, byte for byte, to the end of session 1.
    assert got == SESSION_1[:len(got)] and got
    assert run(["cat", new / "p@g"]).stdout == SESSION_1[len(got):]
    # A new group reads everything from the start, with the same EOF.
    assert run(["cat", new / "p@fresh"]).stdout == SESSION_1
    assert run(["cat", new / "q"]).stdout == OTHER
    # New writes append after the old records.
    run(["sh", "-c", f'printf "after the upgrade\\n" > "{new / "q"}"'])
    assert run(["cat", new / "q@other"]).stdout == OTHER
    assert run(["cat", new / "q@other"]).stdout == b"after the upgrade\n"
    assert run(["cat", new / "q"]).stdout == b"after the upgrade\n"
    # The second session's bytes are there too (its END came when the old daemon stopped,
    # or comes with the session's lease).
    fd = os.open(new / "p@fresh", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 1 << 16) == SESSION_2
    finally:
        os.close(fd)
    # The job's delivery count came along: it is set aside, not delivered a sixth time.
    assert run(["cat", new / "jobs"]).stdout == b"fine\n"
    assert os.getxattr(new / "jobs", "user.dnpfs.set_aside.default") == b"1"
    (aside,) = json.loads(os.getxattr(new / "jobs", "user.dnpfs.stat"))["groups"][""][
        "set_aside_records"]
    assert (aside["data"], aside["deliveries"]) == ("poison\n", MAX_DELIVERIES)
    assert "data" not in columns(store) and "seg" in columns(store)
    with contextlib.closing(sqlite3.connect(records_path(store))) as db:
        assert db.execute("PRAGMA page_size").fetchone() == (4096,)  # as a new store's
    segments = os.listdir(store.with_name(store.name + ".segments"))
    assert segments and sum(
        os.path.getsize(store.with_name(store.name + ".segments") / s) for s in segments
    ) == len(SESSION_1) + len(SESSION_2) + len(OTHER) + len(b"after the upgrade\n") + len(
        b"poison\nfine\n")


def test_a_store_of_the_previous_release_is_moved_at_the_first_mount(
        previous_release, tmp_path, store, make_mount):
    got = make_old_store(tmp_path, previous_release, store)
    check_upgraded(make_mount, store, got)


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_a_move_killed_midway_is_done_again_at_the_next_mount(
        previous_release, tmp_path, store, make_mount):
    got = make_old_store(tmp_path, previous_release, store)
    # kill -9 at the second write to a segment: one pipe's bytes are in
    # segment files, the other's not, nothing committed.
    killed = Mount.under(tmp_path, "killed", ["--store", str(store)], wrap=lambda argv: [
        STRACE, "-f", "-o", "/dev/null", "-e", "trace=pwritev,pwritev2",
        "-e", "inject=pwritev,pwritev2:signal=KILL:when=2", *argv])
    with pytest.raises(AssertionError):
        killed.start()
    killed.stop()
    assert os.listdir(store.with_name(store.name + ".segments")), "killed before any segment"
    assert "data" in columns(store)
    check_upgraded(make_mount, store, got)


def test_a_running_daemon_of_the_previous_release_stops_the_move(
        previous_release, tmp_path, store, make_mount):
    make_old_store(tmp_path, previous_release, store)
    old = old_mount(tmp_path, previous_release, store).start()
    try:
        with pytest.raises(AssertionError) as refused:
            make_mount(name="new")
        assert f"pid {old.pid}" in str(refused.value) and "stop every dnpfs daemon" in str(
            refused.value), refused.value
        assert run(["cat", old / "q"]).stdout == OTHER  # the old daemon goes on unharmed
    finally:
        old.stop(signal.SIGTERM)
    assert "data" in columns(store)


def test_two_daemons_of_the_new_release_mounting_at_once_move_it_once(
        previous_release, tmp_path, store):
    got = make_old_store(tmp_path, previous_release, store)
    mounts = [Mount.under(tmp_path, name, ["--store", str(store)]) for name in ("x", "y")]
    try:
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(m.start) for m in mounts]:
                started.result()
        moved = [m for m in mounts if "moved to segment files" in m.log_text()]
        assert len(moved) == 1, [m.log_text() for m in mounts]
        for m in mounts:
            assert "cannot use store" not in m.log_text(), m.log_text()
        x, y = mounts
        assert run(["cat", x / "p@g"]).stdout == SESSION_1[len(got):]
        assert run(["cat", y / "p@fresh"]).stdout == SESSION_1
    finally:
        for m in mounts:
            m.stop()


def test_a_move_that_fills_the_disk_leaves_the_old_store_for_the_next_try(
        previous_release, tmp_path):
    made = tmp_path / "made" / "dnpfs.sqlite"
    old = old_mount(tmp_path, previous_release, made).start()
    big = os.urandom(1 << 20)
    try:
        os.mkfifo(old / "big")
        with open(old / "big", "wb", buffering=0) as w:
            w.write(big)
    finally:
        old.stop()
    disk = tmp_path / "disk"
    disk.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=8m", "upgrade-test", str(disk)])
    new = Mount.under(tmp_path, "new", ["--store", str(disk / "store" / "dnpfs.sqlite")])
    try:
        shutil.copytree(made.parent, disk / "store")
        store = disk / "store" / "dnpfs.sqlite"
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler = disk / "filler"
        run(["fallocate", "-l", str(free - (512 << 10)), str(filler)])  # room for half of it
        with pytest.raises(AssertionError) as refused:
            new.start()
        assert "moving it to segment files failed" in str(refused.value) and \
            "No space left" in str(refused.value), refused.value
        new.stop()
        assert os.listdir(store.with_name(store.name + ".segments")) == []  # space given back
        assert "data" in columns(store)
        filler.unlink()
        new.start()
        assert "moved to segment files: 1 pipes" in new.log_text()
        assert run(["cat", new / "big"]).stdout == big
    finally:
        new.stop()
        run(["umount", str(disk)])

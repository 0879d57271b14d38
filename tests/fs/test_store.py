"""The embedded store: durable, shareable between daemons, and bounded by retention."""

from __future__ import annotations

import errno
import os
import sqlite3
import statistics
import threading
import time

from dnpfs.backends.sqlite import records_path

from ..util import run, spawn, wait_blocked, wait_for


def read_available(path) -> bytes:
    """Everything the pipe holds now (non-blocking reads until EAGAIN or EOF)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(fd)
    return out


def test_kill_9_loses_nothing_that_close_or_fsync_acknowledged(make_mount):
    m = make_mount()
    os.mkfifo(m / "p")
    expected = b""
    for i in range(200):
        line = f"closed {i}\n".encode()
        with open(m / "p", "wb", buffering=0) as w:
            w.write(line)
        expected += line
    w = open(m / "p", "wb", buffering=0)
    for i in range(50):
        line = f"fsynced {i}\n".encode()
        w.write(line)
        expected += line
    os.fsync(w.fileno())
    m.kill()  # no chance to flush anything more
    try:
        w.close()
    except OSError:
        pass
    m.start()
    got = b""
    while True:  # the stale END markers of the dead daemon's sessions are skipped
        chunk = read_available(m / "p")
        if not chunk:
            break
        got += chunk
    assert got == expected


def test_two_daemons_share_one_store_with_low_latency(make_mount):
    a = make_mount(name="a")
    b = make_mount(name="b")
    os.mkfifo(a / "p")
    fd = os.open(b / "p", os.O_RDONLY)
    w = open(a / "p", "wb", buffering=0)
    delays = []
    try:
        for i in range(30):
            got = []
            t = threading.Thread(target=lambda: got.append(os.read(fd, 100)))
            t.start()
            time.sleep(0.05)
            start = time.monotonic()
            w.write(b"ping %d" % i)
            t.join(5)
            delays.append(time.monotonic() - start)
            assert got == [b"ping %d" % i]
    finally:
        w.close()
        os.close(fd)
    assert statistics.median(delays) < 0.050, f"median {statistics.median(delays)*1000:.1f} ms"


def test_full_buffer_blocks_the_writer_until_the_store_takes_it(make_mount, store):
    m = make_mount(["--store", str(store)], extra=["--buffer-mib", "1"])
    os.mkfifo(m / "p")
    # Another process holds the records' write lock: nothing can be stored.
    lock = sqlite3.connect(records_path(store), isolation_level=None)  # appends' lock
    lock.execute("BEGIN EXCLUSIVE")
    writer = spawn(["dd", "if=/dev/zero", f"of={m/'p'}", "bs=64k", "count=64", "status=none"])
    try:
        time.sleep(2)
        assert writer.poll() is None, "4 MiB went into a 1 MiB buffer without blocking"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert writer.wait(30) == 0
    total = 0
    cat = spawn(["cat", str(m / "p")])
    out, _ = cat.communicate(timeout=30)
    total = len(out)
    assert total == 64 * 65536


def test_retention_removes_consumed_and_old_records(make_mount, store):
    m = make_mount(["--store", str(store)],
                   extra=["--retention-check", "0.5", "--retention-days", str(3 / 86400)])
    os.mkfifo(m / "p")
    os.mkfifo(m / "q")
    run(f"printf consumed > {m/'p'}", shell=True)
    assert run(["cat", str(m / "p")]).stdout == b"consumed"

    def records():
        db = sqlite3.connect(records_path(store))
        try:
            return db.execute("SELECT count(*) FROM records").fetchone()[0]
        finally:
            db.close()

    run(f"printf unread > {m/'q'}", shell=True)
    # Consumed by every group: gone at the next check.  Unread: gone after 3 s.
    wait_for(lambda: records() <= 3, 5, what="consumed records removed")
    assert read_available(m / "q") == b"unread"  # still there before its age
    run(f"printf old > {m/'q'}", shell=True)
    wait_for(lambda: records() == 0, 10, what="old records removed")
    assert read_available(m / "q") == b""


def test_writer_blocked_by_a_full_buffer_can_be_killed(make_mount, store):
    m = make_mount(["--store", str(store)], extra=["--buffer-mib", "1"])
    os.mkfifo(m / "p")
    lock = sqlite3.connect(records_path(store), isolation_level=None)  # appends' lock
    lock.execute("BEGIN EXCLUSIVE")
    try:
        writer = spawn(["dd", "if=/dev/zero", f"of={m/'p'}", "bs=64k", "count=64", "status=none"])
        wait_blocked(writer)
        time.sleep(1)
        assert writer.poll() is None
        start = time.monotonic()
        writer.kill()
        writer.wait(5)
        assert time.monotonic() - start < 1.0
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    # The daemon is fine and the pipe still works.
    run(f"printf after > {m/'p'}", shell=True)


def test_close_reports_eio_after_the_delivery_timeout(make_mount, store):
    m = make_mount(["--store", str(store)], extra=["--delivery-timeout", "2"])
    os.mkfifo(m / "p")
    w = open(m / "p", "wb", buffering=0)  # BEGIN is stored before the store is locked
    lock = sqlite3.connect(records_path(store), isolation_level=None)  # appends' lock
    lock.execute("BEGIN EXCLUSIVE")
    try:
        w.write(b"will not be stored in time")
        start = time.monotonic()
        try:
            w.close()
            code = 0
        except OSError as e:
            code = e.errno
        took = time.monotonic() - start
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert code == errno.EIO
    assert 1.5 < took < 10, took
    # The daemon goes on: new sessions work once the store is back.
    run(f"printf fine > {m/'p'}", shell=True)

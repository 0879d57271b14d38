"""A writer dies: kill -9 of the writing process (its mount lives on), and
the death of the writer's whole host (its daemon killed, or its network cut
for good), where readers elsewhere must still get EOF in bounded time."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ..hosts import Hosts
from ..util import wait_for
from .agent import parse
from .conftest import DNPFS, ROOT, kafka_args, long_or, make_plain_mount
from .workload import Writer, stop_all

# The session timeout the host-death tests mount with (dnpfs's default is 30 s).
SESSION_TIMEOUT = float(os.environ.get("DNPFS_FAULTS_SESSION_TIMEOUT") or long_or(6, 30))
# Expiry is checked every timeout/4 against heartbeats sent every timeout/6.
EOF_BUDGET = SESSION_TIMEOUT * 1.5 + 3


def _has_option(option: str) -> bool:
    r = subprocess.run([*DNPFS, "mount", "--help"], capture_output=True, text=True, cwd=ROOT)
    return option in r.stdout


def cat(path) -> subprocess.Popen:
    return subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def lines_of(out: bytes) -> list[tuple[str, int]]:
    got = []
    for line in out.split(b"\n")[:-1]:
        p = parse(line)
        assert p is not None, f"corrupt line {line[:80]!r}"
        got.append(p[:2])
    return got


def test_kill_9_of_a_writing_process_ends_its_session(backend, backend_args, tmp_path,
                                                      reliability):
    reliability.row(
        fault=f"kill -9 of a process in the middle of writing (its mount stays up; {backend})",
        expected="the kernel releases its file: readers of every group get all its handed-over"
                 " records, in order, then EOF")
    a = make_plain_mount(tmp_path, "a", backend_args).start()
    b = make_plain_mount(tmp_path, "b", backend_args).start()
    try:
        os.mkfifo(a / "p")
        wait_for(lambda: os.path.exists(b / "p"), 5, what="the pipe on mount b")
        readers = [cat(b / "p"), cat(a / "p@other")]
        time.sleep(0.5)
        w = Writer(a / "p", "w", tmp_path / "w.log", rate=200)
        wait_for(lambda: w.written() >= 300, 20, what="300 records written")
        w.kill()
        killed = time.monotonic()
        outs, took = [], []
        for r in readers:
            try:
                out, _ = r.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                r.kill()
                out, _ = r.communicate()
            took.append(round(time.monotonic() - killed, 2))
            outs.append(out)
        written = w.written()
        got = [lines_of(out) for out in outs]
        expected = [("w", s) for s in range(written + 1)]
        reliability.measure(
            written=written + 1, delivered_per_group=[len(g) for g in got],
            eof_after_kill_s=took, reader_exit=[r.returncode for r in readers])
        for g, r in zip(got, readers):
            assert r.returncode == 0, "no EOF"
            # The write() that was under way when the kill came may or may not be there.
            assert g in (expected, expected + [("w", written + 1)]), \
                f"{len(g)} records, first difference at {next((i for i, (x, y) in enumerate(zip(g, expected)) if x != y), None)}"
        assert max(took) < 5
    finally:
        a.stop()
        b.stop()


def _expiry_args() -> list[str]:
    return ["--session-timeout", str(SESSION_TIMEOUT)] if _has_option("--session-timeout") else []


def _check_eof_after_host_death(reliability, reader: subprocess.Popen, writer: Writer,
                                died: float, how: str) -> None:
    try:
        out, _ = reader.communicate(timeout=EOF_BUDGET)
        eof_after = time.monotonic() - died
    except subprocess.TimeoutExpired:
        reader.kill()
        out, _ = reader.communicate()
        eof_after = None
    got = lines_of(out)
    acked = sorted(writer.acked())
    missing = sorted(set(acked) - {s for _, s in got})
    reliability.measure(
        how=how, session_timeout_s=SESSION_TIMEOUT,
        option=" ".join(_expiry_args()) or "none (no --session-timeout)",
        eof_after_s=round(eof_after, 1) if eof_after is not None else
        f"none within {EOF_BUDGET:.0f} s", acked=len(acked), acked_missing=len(missing))
    assert not missing, f"{len(missing)} acknowledged records missing before EOF"
    assert eof_after is not None and reader.returncode == 0, \
        f"no EOF within {EOF_BUDGET:.0f} s of the writer's host dying"


def _kill_the_writers_daemon(reliability, tmp_path, backend_args, start_reader) -> None:
    """A writer on mount a, a reader on mount b (``start_reader(path)``), then
    kill -9 of a's daemon once 100 records are acknowledged."""
    extra = _expiry_args()
    a = make_plain_mount(tmp_path, "a", backend_args, extra).start()
    b = make_plain_mount(tmp_path, "b", backend_args, extra).start()
    w = None
    try:
        os.mkfifo(a / "p")
        wait_for(lambda: os.path.exists(b / "p"), 5, what="the pipe on mount b")
        reader = start_reader(b / "p")
        w = Writer(a / "p", "w", tmp_path / "w.log", fsync_every=10, rate=100)
        wait_for(lambda: len(w.acked()) >= 100, 20, what="100 acknowledged records")
        a.kill()
        died = time.monotonic()
        w.kill()
        _check_eof_after_host_death(reliability, reader, w, died, "kill -9 of the daemon")
    finally:
        if w is not None:
            stop_all([w])
        a.stop()
        b.stop()


def test_readers_get_eof_when_the_writers_daemon_is_killed(backend, backend_args, tmp_path,
                                                           reliability):
    reliability.row(
        fault=f"The writer's host dies: kill -9 of the daemon holding an open writer session"
              f" ({backend})",
        expected=f"a reader on another mount gets every acknowledged record, then EOF within the"
                 f" configurable session timeout ({SESSION_TIMEOUT:.0f} s here, 30 s by default)")
    _kill_the_writers_daemon(reliability, tmp_path, backend_args, cat)


@pytest.mark.kafka
def test_readers_get_eof_when_the_writers_host_is_cut_off_for_good(fault_broker, tmp_path,
                                                                   reliability):
    reliability.row(
        fault="The writer's host dies: its network namespace is cut from the broker for good"
              " while a writer session is open (kafka)",
        expected=f"a reader on another host gets every acknowledged record, then EOF within the"
                 f" session timeout ({SESSION_TIMEOUT:.0f} s here)")
    if fault_broker.hosts_addr is None:
        pytest.skip("no HOSTS listener")
    extra = _expiry_args()
    args = kafka_args(fault_broker.hosts_addr)
    with Hosts(["a", "b"], reach=fault_broker.hosts_addr) as hosts:
        a = make_plain_mount(tmp_path, "a", args, extra,
                             wrap=lambda argv: hosts.cmd("a", argv)).start()
        b = make_plain_mount(tmp_path, "b", args, extra,
                             wrap=lambda argv: hosts.cmd("b", argv)).start()
        w = None
        try:
            os.mkfifo(a / "p")
            wait_for(lambda: os.path.exists(b / "p"), 5, what="the pipe on host b")
            reader = cat(b / "p")
            w = Writer(a / "p", "w", tmp_path / "w.log", fsync_every=10, rate=100)
            wait_for(lambda: len(w.acked()) >= 100, 20, what="100 acknowledged records")
            w.proc.send_signal(19)  # SIGSTOP: the session stays open, nothing more is written
            time.sleep(0.3)
            hosts.cut("a")
            died = time.monotonic()
            _check_eof_after_host_death(reliability, reader, w, died, "network cut for good")
        finally:
            if w is not None:
                w.proc.send_signal(18)
                stop_all([w])
            hosts.heal("a")
            a.stop()
            b.stop()


POLL_READER = """
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
p = select.poll()
p.register(fd, select.POLLIN)
while True:
    p.poll(1000)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            sys.exit(0)
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
"""


def poll_reader(path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", POLL_READER, str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_poll_reader_gets_eof_when_the_writers_daemon_is_killed(tmp_path, reliability):
    reliability.row(
        fault="The writer's daemon is killed while the only reader waits in poll() with"
              " O_NONBLOCK (event-loop style) on another mount (sqlite)",
        expected=f"the same as a blocked reader: every acknowledged record, then EOF within"
                 f" the session timeout ({SESSION_TIMEOUT:.0f} s here)")
    args = ["--store", str(tmp_path / "store" / "s.sqlite")]
    _kill_the_writers_daemon(reliability, tmp_path, args, poll_reader)

"""Invariants under random schedules (hypothesis, stateful): opens, writes,
fsyncs, closes, non-blocking packet reads, kills of writing and reading
processes, and daemon restarts (SIGTERM or kill -9), across two mounts of one
embedded store.  After every step and at the end of every example:

- no loss: every record whose fsync()/close() returned is delivered to the
  default group (and to group g, if g existed when it was written);
- no duplicate (the embedded store moves a group's cursor transactionally,
  and the schedule never kills a daemon in the middle of a read);
- per-writer order within each reading handle;
- EOF rules: never an EOF while a writer that opened before the last close
  is still open; once a handle returned EOF it keeps returning 0.

15 examples of up to 25 steps by default; DNPFS_LONG=1: 150 of 40.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
import uuid

import pytest
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule, run_state_machine_as_test)

from ..util import proc_state, wait_for
from .agent import parse, record
from .conftest import LONG, make_plain_mount
from .workload import Reader, Writer, records_of

EXAMPLES = 150 if LONG else 15
STEPS = 40 if LONG else 25


class Env:
    """The two mounts, kept across examples (each example uses a pipe of its own)."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        args = ["--store", str(tmp_path / "store" / "s.sqlite")]
        self.mounts = [make_plain_mount(tmp_path, n, args) for n in ("a", "b")]
        for m in self.mounts:
            m.start()
        self.stats = {"examples": 0, "steps": 0, "restarts": 0, "kills_9": 0,
                      "writer_kills": 0, "reader_kills": 0, "records_acked": 0,
                      "records_delivered": 0, "eofs": 0}


class Schedules(RuleBasedStateMachine):
    env: Env = None

    @initialize()
    def setup(self):
        self.env.stats["examples"] += 1
        self.pipe = f"h{uuid.uuid4().hex[:8]}"
        os.mkfifo(self.env.mounts[0] / self.pipe)
        wait_for(lambda: os.path.exists(self.env.mounts[1] / self.pipe), 5, what="the pipe")
        self.clock = itertools.count()
        self.writers = {}  # fd -> dict(mount, wid, seq, pending, opened)
        self.readers = {}  # fd -> dict(mount, group, eof, last)
        self.procs = []  # (kind, agent, mount)
        self.acked = {}  # (wid, seq) -> time acked (clock)
        self.group_g_since = None  # clock when group g first attached
        self.delivered = {"": {}, "g": {}}  # group -> {(wid, seq): count}
        self.closes = []  # clock of every session end we know of
        self.nwid = itertools.count()
        self.restarts = 0

    # -- helpers ---------------------------------------------------------------
    def m(self, i):
        return self.env.mounts[i]

    def _drop_mount_handles(self, i):
        for fd, w in list(self.writers.items()):
            if w["mount"] == i:
                self._close_quietly(fd)
                del self.writers[fd]
                self.closes.append(next(self.clock))  # END now, or by lease later
        for fd, r in list(self.readers.items()):
            if r["mount"] == i:
                self._close_quietly(fd)
                del self.readers[fd]

    @staticmethod
    def _close_quietly(fd):
        try:
            os.close(fd)
        except OSError:
            pass

    def _got(self, group, wid, seq, handle_last):
        key = (wid, seq)
        seen = self.delivered[group]
        assert seen.get(key, 0) == 0, f"duplicate {key} in group {group!r}"
        seen[key] = 1
        self.env.stats["records_delivered"] += 1
        assert seq > handle_last.get(wid, -1), f"{key} after {handle_last.get(wid)}: out of order"
        handle_last[wid] = seq

    # -- writers ----------------------------------------------------------------
    @precondition(lambda self: len(self.writers) < 3)
    @rule(mount=st.integers(0, 1))
    def open_writer(self, mount):
        fd = os.open(self.m(mount) / self.pipe, os.O_WRONLY)
        self.writers[fd] = dict(mount=mount, wid=f"w{next(self.nwid)}", seq=0, pending=[],
                                opened=next(self.clock))

    @precondition(lambda self: self.writers)
    @rule(data=st.data(), count=st.integers(1, 5))
    def write(self, data, count):
        fd = data.draw(st.sampled_from(sorted(self.writers)))
        w = self.writers[fd]
        for _ in range(count):
            os.write(fd, record(w["wid"], w["seq"]))
            w["pending"].append(w["seq"])
            w["seq"] += 1

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def fsync(self, data):
        fd = data.draw(st.sampled_from(sorted(self.writers)))
        w = self.writers[fd]
        os.fsync(fd)
        now = next(self.clock)
        for s in w["pending"]:
            self.acked[(w["wid"], s)] = now
        w["pending"] = []

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def close_writer(self, data):
        fd = data.draw(st.sampled_from(sorted(self.writers)))
        w = self.writers.pop(fd)
        os.close(fd)
        now = next(self.clock)
        for s in w["pending"]:
            self.acked[(w["wid"], s)] = now
        self.closes.append(now)

    @precondition(lambda self: sum(k == "w" for k, *_ in self.procs) < 2)
    @rule(mount=st.integers(0, 1), count=st.integers(0, 20))
    def writer_process(self, mount, count):
        """A process that writes *count* records (fsync each), then holds its
        session open until it is killed."""
        wid = f"p{next(self.nwid)}"
        agent = Writer(self.m(mount) / self.pipe, wid, self.env.tmp / f"{self.pipe}-{wid}.log",
                       fsync_every=1, rate=500, count=count, hold=True)
        wait_for(lambda: len(agent.acked()) >= count, 10, what="the writer process")
        self.procs.append(("w", agent, mount, next(self.clock)))

    @precondition(lambda self: any(k == "w" for k, *_ in self.procs))
    @rule(data=st.data())
    def kill_writer_process(self, data):
        i = data.draw(st.sampled_from([i for i, p in enumerate(self.procs) if p[0] == "w"]))
        _, agent, _, _ = self.procs.pop(i)
        agent.kill()
        self.env.stats["writer_kills"] += 1
        now = next(self.clock)
        for s in agent.acked():
            self.acked[(agent.wid, s)] = now
        self.closes.append(now)

    # -- readers ----------------------------------------------------------------
    @precondition(lambda self: len(self.readers) < 3)
    @rule(mount=st.integers(0, 1), group=st.sampled_from(["", "g"]))
    def open_reader(self, mount, group):
        path = self.m(mount) / (self.pipe + ("@" + group if group else ""))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_DIRECT)
        if group == "g" and self.group_g_since is None:
            self.group_g_since = next(self.clock)
        self.readers[fd] = dict(mount=mount, group=group, eof=False, last={},
                                opened=next(self.clock))

    @precondition(lambda self: self.readers)
    @rule(data=st.data(), limit=st.integers(1, 50))
    def read(self, data, limit):
        fd = data.draw(st.sampled_from(sorted(self.readers)))
        r = self.readers[fd]
        for _ in range(limit):
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                assert not r["eof"], "EAGAIN after EOF: EOF must stick to the handle"
                return
            now = next(self.clock)
            if not chunk:
                if not r["eof"]:
                    self._check_eof(now)
                    self.env.stats["eofs"] += 1
                r["eof"] = True
                return
            assert not r["eof"], f"data after EOF on one handle: {chunk[:40]!r}"
            p = parse(chunk.rstrip(b"\n"))
            assert p is not None and chunk.endswith(b"\n"), f"not one record: {chunk[:80]!r}"
            self._got(r["group"], p[0], p[1], r["last"])

    def _check_eof(self, now):
        """EOF needs an END (a close, or a dead writer's) after which every writer
        still open opened: an END of a session that began earlier than a writer
        still open can never leave the group with no session open."""
        live = [w["opened"] for w in self.writers.values()]
        live += [opened for kind, _, _, opened in self.procs if kind == "w"]
        if not live:
            return
        earliest = min(live)
        assert any(c < earliest for c in self.closes), \
            "EOF while a writer that opened before every close is still open"

    @precondition(lambda self: self.readers)
    @rule(data=st.data())
    def close_reader(self, data):
        fd = data.draw(st.sampled_from(sorted(self.readers)))
        del self.readers[fd]
        os.close(fd)

    @precondition(lambda self: sum(k == "r" for k, *_ in self.procs) < 1)
    @rule(mount=st.integers(0, 1))
    def reader_process(self, mount):
        log = self.env.tmp / f"{self.pipe}-r{next(self.nwid)}.log"
        agent = Reader(self.m(mount) / self.pipe, log, packet=True, reopen=True, size=4096)
        wait_for(agent.opened, 10, what="the reader process")
        self.procs.append(("r", agent, mount, next(self.clock)))

    @precondition(lambda self: any(k == "r" for k, *_ in self.procs))
    @rule()
    def kill_reader_process(self):
        i = next(i for i, p in enumerate(self.procs) if p[0] == "r")
        _, agent, _, _ = self.procs.pop(i)
        with self._writers_paused():
            self._settle(agent)
            agent.kill()
        self.env.stats["reader_kills"] += 1
        self._collect(agent)

    @contextlib.contextmanager
    def _writers_paused(self):
        """Writing processes stopped (SIGSTOP) meanwhile: a writer that never
        ends (count 0) keeps a reader's log growing, so it never settled and
        was killed while records flowed to it: one it had most likely been
        given was counted as lost (long variant, 2026-12-03)."""
        paused = [a for kind, a, *_ in self.procs if kind == "w" and a.alive()]
        for agent in paused:
            agent.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for agent in paused:
                agent.proc.send_signal(signal.SIGCONT)

    def _settle(self, agent):
        """Kill a reading process only while it sits in read() with nothing on the
        way to it, so that what it logged is what it was given.  Call it with the
        writers paused."""
        size = -1
        for _ in range(100):
            now = agent.log.stat().st_size
            if now == size and proc_state(agent.pid) == "S":
                return
            size = now
            time.sleep(0.1)
        raise AssertionError(f"reader {agent.pid} did not settle in 10 s: its kill would lose"
                             " what it holds")

    def _collect(self, agent):
        last = {}
        for _, line in records_of(agent)[0]:
            p = parse(line)
            assert p is not None, f"corrupt {line[:80]!r}"
            self._got("", p[0], p[1], last)

    # -- daemons ----------------------------------------------------------------
    @precondition(lambda self: self.restarts < 1)
    @rule(mount=st.integers(0, 1), hard=st.booleans())
    def restart_daemon(self, mount, hard):
        """At most one per example: each costs a second or two."""
        self.restarts += 1
        m = self.m(mount)
        with self._writers_paused():
            for kind, agent, pm, _ in self.procs:  # in flight to a reader of this mount?
                if kind == "r" and pm == mount:
                    self._settle(agent)
            if hard:
                m.kill()
                self.env.stats["kills_9"] += 1
            else:
                m.stop()
        self.env.stats["restarts"] += 1
        now = next(self.clock)
        self._drop_mount_handles(mount)
        for i in reversed(range(len(self.procs))):
            kind, agent, pm, _ = self.procs[i]
            if pm == mount:
                self.procs.pop(i)
                if kind == "w":
                    agent.kill()
                    for s in agent.acked():
                        self.acked[(agent.wid, s)] = now
                    self.closes.append(now)
                else:
                    agent.kill()
                    self._collect(agent)
        m.start()

    @invariant()
    def count_steps(self):
        self.env.stats["steps"] += 1

    def teardown(self):
        try:
            for fd in list(self.writers):
                w = self.writers.pop(fd)
                os.close(fd)
                for s in w["pending"]:
                    self.acked[(w["wid"], s)] = next(self.clock)
            for fd in list(self.readers):
                self.readers.pop(fd)
                os.close(fd)
            for kind, agent, _, _ in sorted(self.procs, key=lambda p: p[0] != "w"):
                if kind == "w":  # writers first: then nothing is on its way to a reader
                    agent.stop()
                    for s in agent.acked():
                        self.acked[(agent.wid, s)] = next(self.clock)
                else:
                    self._settle(agent)
                    agent.kill()
                    self._collect(agent)
            self.procs = []
            self.env.stats["records_acked"] += len(self.acked)
            # Drain both groups and check that nothing acknowledged is missing.
            for group in ("", "g"):
                if group == "g" and self.group_g_since is None:
                    continue
                self._drain(group)
                want = {k for k, t in self.acked.items()
                        if group == "" or t > self.group_g_since}
                missing = sorted(want - set(self.delivered[group]))
                assert not missing, f"group {group!r}: acknowledged records lost: {missing[:10]}"
        finally:
            for fd in list(self.writers) + list(self.readers):
                self._close_quietly(fd)
            for _, agent, _, _ in self.procs:
                if agent.alive():
                    agent.proc.kill()

    def _drain(self, group):
        path = self.m(0) / (self.pipe + ("@" + group if group else ""))
        deadline = time.monotonic() + 10
        quiet = 0
        while quiet < 3 and time.monotonic() < deadline:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_DIRECT)
            last = {}
            try:
                while True:
                    try:
                        chunk = os.read(fd, 4096)
                    except BlockingIOError:
                        quiet += 1
                        time.sleep(0.1)
                        break
                    if not chunk:
                        break  # an EOF: the rest needs a new handle
                    quiet = 0
                    p = parse(chunk.rstrip(b"\n"))
                    assert p is not None, f"corrupt {chunk[:80]!r}"
                    self._got(group, p[0], p[1], last)
            finally:
                os.close(fd)


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    for m in e.mounts:
        m.stop()


def test_random_schedules_keep_the_invariants(env, reliability):
    reliability.row(
        fault=f"Random schedules (hypothesis, {EXAMPLES} examples x up to {STEPS} steps): opens,"
              " writes, fsyncs, closes, packet reads, kill -9 of writing and reading processes,"
              " daemon restarts by SIGTERM or kill -9, over two mounts (sqlite)",
        expected="no acknowledged record lost, no duplicate, per-writer order in every handle,"
                 " no early EOF, EOF sticks to its handle")
    Schedules.env = env
    try:
        run_state_machine_as_test(Schedules, settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
            suppress_health_check=list(HealthCheck), derandomize=not LONG, print_blob=True,
            # Shrinking replays schedules on real daemons for many minutes:
            # only when asked (DNPFS_SHRINK=1).  The failing schedule is printed.
            phases=list(Phase) if os.environ.get("DNPFS_SHRINK") == "1"
            else [Phase.explicit, Phase.reuse, Phase.generate]))
    finally:
        reliability.measure(**env.stats)

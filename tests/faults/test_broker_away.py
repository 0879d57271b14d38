"""The broker goes away and comes back: SIGSTOP of the whole broker process
(a stall: connections stay open, nothing answers), then SIGCONT."""

from __future__ import annotations

import os
import time

import pytest

from .conftest import kafka_args, long_or, make_plain_mount
from .workload import Reader, Writer, stop_all, wait_delivered
from ..util import wait_for

pytestmark = pytest.mark.kafka

FREEZE = long_or(10, 30)


def first_read_after(reader: Reader, t: float) -> float | None:
    """Seconds from *t* (time.time()) to the reader's first read() that returned data after it."""
    for f in reader.frames():
        if f[0] == "D" and f[1] / 1e9 > t:
            return f[1] / 1e9 - t
    return None


def test_broker_sigstop_mid_stream_loses_no_acknowledged_record(thawed, tmp_path, reliability):
    broker = thawed
    reliability.row(
        fault=f"Broker frozen (SIGSTOP {FREEZE} s, then SIGCONT) while 2 writers (fsync every 20;"
              " close every 10) stream to readers of 2 groups on another mount (kafka)",
        expected="writers block or continue, no hang after SIGCONT; every record whose fsync()/"
                 "close() returned 0 is delivered to each group; readers resume by themselves;"
                 " duplicates only counted")
    args = kafka_args(broker.bootstrap)
    a = make_plain_mount(tmp_path, "a", args).start()
    b = make_plain_mount(tmp_path, "b", args).start()
    agents = []
    try:
        os.mkfifo(a / "p")
        wait_for(lambda: os.path.exists(b / "p"), 5, what="the pipe on mount b")
        readers = [Reader(b / "p", tmp_path / "r-default.log", packet=False),
                   Reader(a / "p@audit", tmp_path / "r-audit.log", packet=False)]
        agents += readers
        wait_for(lambda: all(r.opened() for r in readers), 10, what="readers open")
        writers = [Writer(a / "p", "w1", tmp_path / "w1.log", fsync_every=20, rate=200),
                   Writer(a / "p", "w2", tmp_path / "w2.log", session_every=10, rate=100)]
        agents += writers
        time.sleep(3)
        before = [len(w.acked()) for w in writers]
        broker.freeze()
        time.sleep(FREEZE)
        during = [len(w.acked()) for w in writers]
        broker.thaw()
        thawed_at = time.time()
        time.sleep(5)
        for w in writers:
            w.stop(timeout=90)
        stopped = time.time()
        got = {}
        for name, r in zip(("default", "audit"), readers):
            got[name] = wait_delivered(writers, [r], timeout=60)
        resumed = [first_read_after(r, thawed_at) for r in readers]
        werrs = [f"{e['op']}:{e['err']}" for w in writers for e in w.errors()]
        worst = {}
        for w in writers:
            for op, s in w.worst().items():
                worst[op] = max(worst.get(op, 0), s)
        reliability.measure(
            freeze_s=FREEZE,
            acked_before=sum(before), acked_while_frozen=sum(during) - sum(before),
            **{f"{g}_{k}": v for g, d in got.items() for k, v in d.summary().items()
               if k in ("acked", "delivered", "lost", "duplicates", "duplicate_bytes", "corrupt",
                        "out_of_order", "read_errors")},
            writer_errors=werrs or 0,
            longest_syscall_s={k: round(v, 2) for k, v in worst.items()},
            readers_resumed_after_s=[round(s, 2) if s is not None else None for s in resumed],
            writers_stopped_after_thaw_s=round(stopped - thawed_at, 1),
        )
        for name, d in got.items():
            assert not d.lost, f"{name}: {len(d.lost)} acknowledged records lost: {d.lost[:10]}"
            assert d.corrupt == 0 and d.phantom == 0 and d.out_of_order == 0, d.summary()
        assert all(r.alive() for r in readers), "a reader gave up"
        assert all(s is not None and s < 30 for s in resumed), resumed
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        broker.thaw()
        stop_all(agents)
        a.stop()
        b.stop()

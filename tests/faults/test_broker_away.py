"""The broker goes away and comes back: SIGSTOP of the whole broker process
(a stall: connections stay open, nothing answers), then SIGCONT."""

from __future__ import annotations

import time

import pytest

from .conftest import kafka_args, long_or, make_plain_mount
from .workload import streaming, wait_delivered

pytestmark = pytest.mark.kafka

FREEZE = long_or(10, 30)


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
    with streaming(a, b, tmp_path, readers=[b / "p", a / "p@audit"]) as s:
        time.sleep(3)
        before = [len(w.acked()) for w in s.writers]
        try:
            broker.freeze()
            time.sleep(FREEZE)
            during = [len(w.acked()) for w in s.writers]
        finally:
            broker.thaw()
        thawed_at = time.time()
        time.sleep(5)
        s.stop_writers(timeout=90)
        stopped = time.time()
        got = {}
        for name, r in zip(("default", "audit"), s.readers):
            got[name] = wait_delivered(s.writers, [r], timeout=60)
        resumed = [r.first_read_after(thawed_at) for r in s.readers]
        reliability.measure(
            freeze_s=FREEZE,
            acked_before=sum(before), acked_while_frozen=sum(during) - sum(before),
            **{f"{g}_{k}": v for g, d in got.items() for k, v in d.summary().items()
               if k in ("acked", "delivered", "lost", "duplicates", "duplicate_bytes", "corrupt",
                        "out_of_order", "read_errors")},
            writer_errors=s.writer_errors() or 0,
            longest_syscall_s={k: round(v, 2) for k, v in s.worst().items()},
            readers_resumed_after_s=[round(t, 2) if t is not None else None for t in resumed],
            writers_stopped_after_thaw_s=round(stopped - thawed_at, 1),
        )
        for name, d in got.items():
            assert not d.lost, f"{name}: {len(d.lost)} acknowledged records lost: {d.lost[:10]}"
            assert d.corrupt == 0 and d.phantom == 0 and d.out_of_order == 0, d.summary()
        assert all(r.alive() for r in s.readers), "a reader gave up"
        assert all(t is not None and t < 30 for t in resumed), resumed
        assert a.proc.poll() is None and b.proc.poll() is None

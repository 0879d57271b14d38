"""The broker killed (kill -9) and started again in the middle of a stream
(issue #26, item 5): aiokafka's idempotent producer may meet errors it
treats as fatal (out-of-order sequence, unknown producer id) after a
restart; dnpfs must go on writing."""

from __future__ import annotations

import os
import time

import pytest

from ..util import wait_for
from .conftest import kafka_args, make_plain_mount
from .test_broker_away import first_read_after
from .workload import Reader, Writer, stop_all, wait_delivered

pytestmark = pytest.mark.kafka

DOWN = 3.0  # seconds between the kill and the new start


def test_broker_killed_and_started_again_mid_stream(fault_broker, tmp_path, reliability):
    broker = fault_broker
    reliability.row(
        fault=f"Broker killed (kill -9), started again {DOWN:g} s later, while 2 writers (fsync"
              " every 20; close every 10) stream to a reader on another mount (kafka)",
        expected="writers go on after the restart; every record whose fsync()/close() returned 0"
                 " is delivered; the reader resumes by itself; duplicates only counted")
    args = kafka_args(broker.bootstrap)
    a = make_plain_mount(tmp_path, "a", args).start()
    b = make_plain_mount(tmp_path, "b", args).start()
    agents = []
    try:
        os.mkfifo(a / "p")
        wait_for(lambda: os.path.exists(b / "p"), 5, what="the pipe on mount b")
        reader = Reader(b / "p", tmp_path / "r.log", packet=False)
        agents.append(reader)
        wait_for(reader.opened, 10, what="reader open")
        writers = [Writer(a / "p", "w1", tmp_path / "w1.log", fsync_every=20, rate=200),
                   Writer(a / "p", "w2", tmp_path / "w2.log", session_every=10, rate=100)]
        agents += writers
        time.sleep(3)
        broker.kill()
        time.sleep(DOWN)
        broker.start_again()
        started = time.time()
        acked_at_start = sum(len(w.acked()) for w in writers)
        time.sleep(15)
        acked_after = sum(len(w.acked()) for w in writers) - acked_at_start
        for w in writers:
            w.stop(timeout=120)
        d = wait_delivered(writers, [reader], timeout=90)
        resumed = first_read_after(reader, started)
        werrs = [f"{e['op']}:{e['err']}" for w in writers for e in w.errors()]
        reliability.measure(
            down_s=DOWN, acked_in_15_s_after_start=acked_after,
            **{k: v for k, v in d.summary().items() if not k.startswith("latency")},
            writer_errors=werrs or 0,
            reader_resumed_after_start_s=None if resumed is None else round(resumed, 2),
        )
        print(f"acked in the 15 s after the start: {acked_after}; writer errors: {werrs[:5]};"
              f" {d.summary()}")
        assert not d.lost, f"{len(d.lost)} acknowledged records lost: {d.lost[:10]}"
        assert d.corrupt == 0 and d.phantom == 0 and d.out_of_order == 0, d.summary()
        assert acked_after > 0, "the writers did not go on after the restart"
        assert resumed is not None
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        if not os.path.exists(f"/proc/{broker.pid}"):
            broker.start_again()
        stop_all(agents)
        a.stop()
        b.stop()

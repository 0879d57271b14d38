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
from .workload import streaming, wait_delivered

pytestmark = pytest.mark.kafka

DOWN = 3.0  # seconds between the kill and the new start
# The kill waits for the stream to reach the reader: on the share path a
# pipe's first reader waits for the broker to initialize the share group's
# state (creating __share_group_state on a fresh broker, seconds under
# load), and a kill in that window leaves the topic "initializing" until
# the broker retries, group.share.initialize.retry.interval.ms (30 s) after
# its restart: that measured the broker's retry, not dnpfs's
# (docs/decisions.md, "Share groups after a broker restart").
FLOWING = 60.0


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
    with streaming(a, b, tmp_path) as s:
        [reader] = s.readers
        opened = time.time()
        wait_for(lambda: reader.first_read_after(opened) is not None, FLOWING,
                 interval=0.2, what="the stream to reach the reader before the kill")
        try:
            time.sleep(1)  # records acquired, read and not yet acknowledged when it dies
            broker.kill()
            time.sleep(DOWN)
            broker.start_again()
        finally:
            if not os.path.exists(f"/proc/{broker.pid}"):
                broker.start_again()
        started = time.time()
        acked_at_start = sum(len(w.acked()) for w in s.writers)
        time.sleep(15)
        acked_after = sum(len(w.acked()) for w in s.writers) - acked_at_start
        s.stop_writers(timeout=120)
        d = wait_delivered(s.writers, [reader], timeout=90)
        resumed = reader.first_read_after(started)
        werrs = s.writer_errors()
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
        # The reader's mount opened a new share session after the restart with
        # nothing the broker refuses (acknowledgements of the lost one:
        # INVALID_REQUEST, and a round lost).
        assert "ShareFetch error 42" not in b.log_text(), "a ShareFetch refused after the restart"
        assert resumed is not None
        assert a.proc.poll() is None and b.proc.poll() is None

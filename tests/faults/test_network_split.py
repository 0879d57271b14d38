"""Network split: a dnpfs daemon inside a network-namespace host (tests/hosts.py)
loses its cable to the broker, then gets it back."""

from __future__ import annotations

import time

import pytest

from ..hosts import Hosts
from ..util import wait_for
from .conftest import kafka_args, long_or, make_plain_mount
from .workload import streaming, wait_delivered

pytestmark = pytest.mark.kafka

WRITER_CUT = long_or(8, 30)
# Longer than the consumer session timeout (10 s): the broker expels the
# reading mount from the group, which rejoins after the heal.
READER_CUT = long_or(14, 30)


@pytest.fixture
def hosts(fault_broker):
    if fault_broker.hosts_addr is None:
        pytest.skip("the fault tests' broker has no HOSTS listener (needs root and iproute2)")
    with Hosts(["a", "b"], reach=fault_broker.hosts_addr) as h:
        yield h


def host_mount(tmp_path, hosts, name, args):
    return make_plain_mount(tmp_path, name, args, wrap=lambda argv: hosts.cmd(name, argv))


def test_split_writer_host_then_reader_host(fault_broker, hosts, tmp_path, reliability):
    reliability.row(
        fault=f"Network split: writer's host cut from the broker for {WRITER_CUT} s, healed; then"
              f" the reader's host cut for {READER_CUT} s (past the 10 s group session timeout),"
              " healed (kafka, network namespaces)",
        expected="every record whose fsync()/close() returned 0 is delivered; the reader resumes"
                 " by itself after each heal; duplicates only counted (at-least-once)")
    args = kafka_args(fault_broker.hosts_addr)
    a = host_mount(tmp_path, hosts, "a", args).start()
    b = host_mount(tmp_path, hosts, "b", args).start()
    with streaming(a, b, tmp_path, session_rate=50) as s:
        [reader] = s.readers
        time.sleep(3)
        try:
            hosts.cut("a")
            time.sleep(WRITER_CUT)
            hosts.heal("a")
            healed_a = time.time()
            wait_for(lambda: reader.first_read_after(healed_a + 0.5) is not None, 60,
                     what="the reader to get data after host a healed")
            resumed_a = reader.first_read_after(healed_a)

            hosts.cut("b")
            time.sleep(READER_CUT)
            hosts.heal("b")
        finally:
            for h in ("a", "b"):
                hosts.heal(h)
        healed_b = time.time()
        wait_for(lambda: reader.first_read_after(healed_b) is not None, 90,
                 what="the reader to get data after host b healed")
        resumed_b = reader.first_read_after(healed_b)
        time.sleep(3)
        s.stop_writers(timeout=90)
        d = wait_delivered(s.writers, [reader], timeout=90)
        reliability.measure(
            writer_host_cut_s=WRITER_CUT, reader_host_cut_s=READER_CUT,
            **{k: v for k, v in d.summary().items() if not k.startswith("latency")},
            writer_errors=s.writer_errors() or 0,
            longest_syscall_s={k: round(v, 2) for k, v in s.worst().items()},
            reader_resumed_after_heal_s=[round(resumed_a, 2), round(resumed_b, 2)],
        )
        assert not d.lost, f"{len(d.lost)} acknowledged records lost: {d.lost[:10]}"
        assert d.corrupt == 0 and d.phantom == 0 and d.out_of_order == 0, d.summary()
        assert reader.alive()
        assert a.proc.poll() is None and b.proc.poll() is None

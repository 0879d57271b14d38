"""Split brain: reader mounts of one pipe on both sides of a network split.

Two hosts read the pipe slowly in one reader group: one of them holds it
(the assignor picks either) and has records buffered when its cable is cut
("a" below); the other waits ("b").  After the session timeout the broker
gives the partition to b, which reads on from a's last commit.  A cut-off mount must stop handing out records by then
(issue #26, item 4): else both hosts serve the pipe at once."""

from __future__ import annotations

import os
import sys
import time

import pytest

from ..hosts import Hosts
from ..util import membership, wait_for
from .conftest import kafka_args, make_plain_mount

pytestmark = pytest.mark.kafka

SESSION_TIMEOUT = 10.0  # _member.SESSION_TIMEOUT_MS
CUT = 25.0
RECORD = 16

# One 16-byte record per write, RATE a second, until killed.
WRITER = f"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
seq = 0
while True:
    os.write(fd, b"%015d\\n" % seq)
    seq += 1
    time.sleep(1 / float(sys.argv[2]))
"""

# Reads one record at a time, RATE a second, logging "time seq" per record.
READER = f"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
log = open(sys.argv[2], "w", buffering=1)
while True:
    data = os.read(fd, {RECORD})
    if not data:
        break
    log.write(f"{{time.time():.3f}} {{int(data)}}\\n")
    time.sleep(1 / float(sys.argv[3]))
"""


def reads(log) -> list[tuple[float, int]]:
    out = []
    for line in log.read_text().splitlines():
        t, _, seq = line.partition(" ")
        if seq:
            out.append((float(t), int(seq)))
    return out


@pytest.fixture
def hosts(fault_broker):
    if fault_broker.hosts_addr is None:
        pytest.skip("the fault tests' broker has no HOSTS listener (needs root and iproute2)")
    with Hosts(["w", "a", "b"], reach=fault_broker.hosts_addr) as h:
        yield h


def test_a_cut_off_reader_mount_stops_before_the_other_side_takes_over(
        fault_broker, hosts, tmp_path, reliability):
    reliability.row(
        fault=f"Split brain: the reading mount's host cut from the broker for {CUT:g} s (past"
              f" the {SESSION_TIMEOUT:g} s group session timeout) while a mount on another host"
              " waits in the same reader group; a writer on a third host goes on (kafka)",
        expected="the cut-off mount hands out no record after its session timeout, before the"
                 " other mount reads; duplicates only from the cut-off mount's last commit on")
    args = kafka_args(fault_broker.hosts_addr)
    mounts = {h: make_plain_mount(tmp_path, h, args, wrap=lambda argv, h=h: hosts.cmd(h, argv))
              for h in ("w", "a", "b")}
    procs = []
    try:
        for m in mounts.values():
            m.start()
        w, a, b = mounts["w"], mounts["a"], mounts["b"]
        os.mkfifo(w / "p")
        wait_for(lambda: os.path.exists(a / "p") and os.path.exists(b / "p"), 10, what="pipe")
        procs.append(hosts.popen("w", [sys.executable, "-c", WRITER, str(w / "p"), "200"]))
        # A named group: one mount at a time reads it (the default group is a
        # share group on brokers that have them, read by every mount).
        procs.append(hosts.popen("a", [sys.executable, "-c", READER, str(a / "p@g"),
                                       str(tmp_path / "reads-a.txt"), "50"]))
        wait_for(lambda: membership(a / "p", "g") == "reading", 30, what="host a to read")
        procs.append(hosts.popen("b", [sys.executable, "-c", READER, str(b / "p@g"),
                                       str(tmp_path / "reads-b.txt"), "50"]))
        # The rebalance as b joins gives the partition to either member (the
        # assignor orders them by member id): the one reading is cut off.
        def settled():
            roles = {h: membership(mounts[h] / "p", "g") for h in ("a", "b")}
            return roles if set(roles.values()) == {"reading", "standby"} else None

        roles = wait_for(settled, 30, what="one host to read and the other to wait")
        cut_host, other = ("a", "b") if roles["a"] == "reading" else ("b", "a")
        time.sleep(5)  # its daemon buffers what its slow reader has not read yet
        cut = time.time()
        hosts.cut(cut_host)
        time.sleep(CUT)
        hosts.heal(cut_host)
        healed = time.time()
        time.sleep(3)
    finally:
        if "cut_host" in locals():
            hosts.heal(cut_host)
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        for m in mounts.values():
            m.stop()
    # a: the host cut off, b: the one waiting, whichever mount that was.
    a_reads = reads(tmp_path / f"reads-{cut_host}.txt")
    b_reads = reads(tmp_path / f"reads-{other}.txt")
    # After the heal a may get the partition back in a rebalance (a hand-over
    # with commits, not a split): only its reads while cut off count.
    a_last = max(t for t, _ in a_reads if t < healed)
    # b may have read before b's join gave the pipe to the other host: only
    # its reads after the cut are the take-over.
    b_first = min((t for t, _ in b_reads if t > cut), default=None)
    dup = {s for _, s in a_reads} & {s for _, s in b_reads}
    a_before = [s for t, s in a_reads if t < cut]
    reliability.measure(
        cut_off_mount_last_read_after_cut_s=round(a_last - cut, 2),
        other_mount_first_read_after_cut_s=None if b_first is None else round(b_first - cut, 2),
        duplicates=len(dup),
        duplicates_read_by_cut_off_mount_s_after_cut=[
            round(min((t for t, s in a_reads if s in dup), default=cut) - cut, 2),
            round(max((t for t, s in a_reads if s in dup), default=cut) - cut, 2)],
    )
    print(f"a read for {a_last - cut:.2f} s after the cut; b read first"
          f" {None if b_first is None else round(b_first - cut, 2)} s after it;"
          f" {len(dup)} duplicates")
    assert a_before, "host a read nothing before the cut"
    assert b_first is not None, "host b never took over"
    assert a_last - cut <= SESSION_TIMEOUT + 1.5, "the cut-off mount went on handing out records"
    assert a_last < b_first, "both hosts handed out records at once"
    # Nothing lost: b reads on from a's last commit, so every record up to
    # b's last one was read somewhere.
    seen = {s for _, s in a_reads} | {s for _, s in b_reads}
    assert set(range(max(seen) + 1)) - seen == set()
    print(f"duplicates: {len(dup)} records, read on a between"
          f" {min((t for t, s in a_reads if s in dup), default=cut) - cut:.2f} and"
          f" {max((t for t, s in a_reads if s in dup), default=cut) - cut:.2f} s after the cut")

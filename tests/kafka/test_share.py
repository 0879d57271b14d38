"""The default group as a Kafka share group (dnpfs/backends/kafka/_share.py):
what is Kafka's own beyond tests/semantics/test_queue.py, which runs the
work-queue behaviour on both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from ..faults.workload import Reader, Writer, judge, stop_all
from ..util import proc_state, spawn, wait_blocked, wait_for
from .admin import has_share_groups
from .admin import run as run_async

pytestmark = pytest.mark.kafka


@pytest.fixture(autouse=True)
def _share_groups(kafka_bootstrap):
    if not has_share_groups(kafka_bootstrap):
        pytest.skip("this broker has no share groups")

SLOW_WORKER = ('trap - INT TERM; while IFS= read -r line; do printf "%s\\n" "$line" >> "$1";'
               ' sleep "$3"; done < "$2"')


def _set_group_config(bootstrap: str, group: str, configs: dict[str, str]) -> None:
    from aiokafka import AIOKafkaClient

    from dnpfs.backends.kafka._aiokafka.share_requests import SetGroupConfig

    async def go() -> None:
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        await client.bootstrap()
        try:
            response = await client.send(client.get_random_node(), SetGroupConfig(group, configs))
            assert response.responses[0][0] == 0, response
        finally:
            await client.close()

    run_async(go())


def test_a_job_longer_than_the_record_lock_stays_with_its_worker(kafka_bootstrap, make_mount,
                                                                  tmp_path):
    # The broker takes back a record whose acquisition lock runs out (15 s
    # here, the shortest it allows; 30 s by default) and hands it to another
    # member: the mount renews the lock while the job runs.
    prefix = f"s{uuid.uuid4().hex[:8]}."
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", prefix, "--share-groups", "auto"]
    a, b = make_mount(args, "a"), make_mount(args, "b")
    os.mkfifo(a / "jobs")
    _set_group_config(kafka_bootstrap, f"dnpfs-share.{prefix}jobs",
                      {"share.record.lock.duration.ms": "15000"})
    long_out, other_out = tmp_path / "long.out", tmp_path / "other.out"
    long = spawn(["bash", "-c", SLOW_WORKER, "w", str(long_out), str(a / "jobs"), "600"],
                 start_new_session=True)
    procs = [long]
    try:
        wait_blocked(long, timeout=30)
        with open(a / "jobs", "w") as w:
            w.write("the long job\n")
        wait_for(lambda: long_out.exists() and long_out.read_text() == "the long job\n",
                 timeout=30, what="the first worker to take the job")
        other = spawn(["bash", "-c", SLOW_WORKER, "w", str(other_out), str(b / "jobs"), "0"],
                      start_new_session=True)
        procs.append(other)
        time.sleep(25)  # past the 15 s lock
        assert not other_out.exists(), "the job went to a second worker while the first had it"
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def test_idle_pipes_do_not_hold_up_a_busy_one(kafka_bootstrap, make_mount, tmp_path):
    # A broker serves a connection's requests one at a time, and a share
    # member's ShareFetch waits there until a record comes.  On one
    # connection per mount, each fetch for the busy pipe queued behind the
    # waits of the idle ones, and tests/faults/test_load.py ended with
    # acknowledged records still on their way (docs/decisions.md, "Work
    # queues on Kafka").
    prefix = f"s{uuid.uuid4().hex[:8]}."
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", prefix, "--share-groups", "auto"]
    a, b = make_mount(args, "a"), make_mount(args, "b")
    idle = [f"idle{i}" for i in range(10)]
    for name in ["jobs", *idle]:
        os.mkfifo(a / name)
    wait_for(lambda: all(os.path.exists(b / n) for n in ["jobs", *idle]), 10,
             what="the pipes on mount b")
    cats = [spawn(["cat", str(m / n)]) for n in idle for m in (a, b)]
    logs = tmp_path / "logs"
    logs.mkdir()
    readers = [Reader(a / "jobs", logs / "ra.log"), Reader(b / "jobs", logs / "rb.log")]
    agents = list(readers)
    try:
        wait_for(lambda: all(proc_state(c.pid) == "S" for c in cats), 30,
                 what="the idle readers to block")
        wait_for(lambda: all(r.opened() for r in readers), 30, what="the readers to open")
        go = logs / "go"
        writer = Writer(a / "jobs", "w", logs / "w.log", rate=30, count=60, pad=64, go=go)
        agents.append(writer)
        # Its first record comes once both mounts joined the pipe's group
        # (and the idle pipes', joined before): from then on, no waiting for joins.
        wait_for(lambda: judge([writer], readers).delivered == 1, 60, what="the first record")
        since = time.time()
        go.touch()
        assert writer.wait(60) == 0
        # Before: after a minute some records were still on their way.
        wait_for(lambda: judge([writer], readers).eofs == 1 and not judge([writer], readers).lost,
                 30, interval=0.2, what="every record and the EOF")
        time.sleep(1)  # for a late duplicate or a second EOF
        d = judge([writer], readers, since)
        assert (d.acked, d.delivered, d.duplicates, d.eofs) == (60, 60, 0, 1), d.summary()
        assert d.corrupt + d.phantom + d.out_of_order == 0, d.summary()
        assert all(len(r.frames()) > 10 for r in readers), "one mount did not take its share"
        # 60 records written over 2 s: each is read within moments of its write
        # (seconds, and growing, while the idle pipes' waits held up the fetches).
        assert d.max_latency < 2.0, d.summary()
    finally:
        stop_all(agents)
        for c in cats:
            c.kill()
            c.wait()


def _write_records(pipe, count: int = 200) -> list[bytes]:
    """*count* records of 64 KiB, each one write() (one record), numbered."""
    records = [(b"%06d" % i) * (65536 // 6) + b"x" * (65536 % 6) for i in range(count)]
    with open(pipe, "wb") as w:
        for rec in records:
            w.write(rec)
            w.flush()
    return records


READ_SOME = """
import os, sys, time
idle = os.open(sys.argv[1], os.O_RDONLY)  # keeps the mount in the share group
fd = os.open(sys.argv[1], os.O_RDONLY)
# a record a read (a read takes as many records held ahead as it has room for)
got = b"".join(os.read(fd, 65536) for _ in range(int(sys.argv[2])))
os.close(fd)
sys.stdout.buffer.write(got)
sys.stdout.flush()
time.sleep(60)  # alive: what it held ahead goes back at its close, not at its exit
"""


def test_records_a_reader_held_ahead_go_back_when_it_closes(kafka_bootstrap, make_mount):
    # A reader that reads back to back acquires records ahead of its reads
    # (_window.py); those it did not reach go back at its close, at once:
    # another mount's reader gets every other record well within the 30 s
    # acquisition lock that would otherwise hold them.  (A second handle stays
    # open on that mount: when a mount's last reader of a pipe closes, the
    # mount leaves the share group, and the broker takes back all it held.)
    prefix = f"s{uuid.uuid4().hex[:8]}."
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", prefix, "--share-groups", "auto"]
    a, b = make_mount(args, "a"), make_mount(args, "b")
    os.mkfifo(a / "p")
    records = _write_records(a / "p")
    first = spawn([sys.executable, "-c", READ_SOME, str(b / "p"), "16"])
    try:
        taken = first.stdout.read(16 * 65536)
        assert len(taken) == 16 * 65536
        # Its close gives them back 0.1 s later (LEAVE_GRACE); a reader that
        # came first would meet the END (EOF) before them.
        time.sleep(1)
        start = time.monotonic()
        rest = subprocess.run(["cat", str(a / "p")], stdout=subprocess.PIPE, timeout=25,
                              check=True).stdout
        assert time.monotonic() - start < 10, "the records held ahead came back only by timeout"
    finally:
        first.kill()
        first.wait(10)
    got = [taken[i:i + 65536] for i in range(0, len(taken), 65536)] + \
        [rest[i:i + 65536] for i in range(0, len(rest), 65536)]
    assert sorted(got) == records  # each record once, whole


READ_SIZES = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
sizes = []
while (chunk := os.read(fd, 1 << 20)):
    sys.stdout.buffer.write(chunk)
    sizes.append(len(chunk))
sys.stdout.flush()
sys.stderr.write(" ".join(map(str, sizes)))
"""


def test_a_reader_that_streams_reads_several_records_held_ahead_at_once(kafka_bootstrap,
                                                                         make_mount):
    # Records acquired ahead for a handle are its own: once its window grew,
    # one 1 MiB read takes as many of them as it has room for (handed out in
    # the trio thread, _share.try_take), whole and in the writer's order.
    prefix = f"s{uuid.uuid4().hex[:8]}."
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", prefix, "--share-groups", "auto"]
    a = make_mount(args, "a")
    os.mkfifo(a / "p")
    records = _write_records(a / "p")
    done = subprocess.run([sys.executable, "-c", READ_SIZES, str(a / "p")],
                          capture_output=True, timeout=60, check=True)
    assert done.stdout == b"".join(records)
    sizes = [int(n) for n in done.stderr.split()]
    assert max(sizes) >= 4 * 65536, sizes  # (one record a read before)
    assert all(n % 65536 == 0 for n in sizes), sizes  # whole records


def test_eof_follows_back_to_back_session_ends_at_once(kafka_bootstrap, make_mount):
    # Three writer sessions end while a fourth (the test's own) stays open,
    # then it ends too.  An END that is no EOF, with the next record a
    # marker already acquired for the reader, ended the read empty, and the
    # reader waited for a change nothing announced: EOF came 30-60 s late
    # (tests/semantics/test_conformance.py's PIPE_BUF scenario, where the
    # reader gave up after 30 s).  The mounts' default: a share group.
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", f"s{uuid.uuid4().hex[:8]}."]
    a, b = make_mount(args, "a"), make_mount(args, "b")
    os.mkfifo(a / "p")
    cat = spawn(["cat", str(b / "p")])
    try:
        hold = os.open(a / "p", os.O_WRONLY)
        writers = [subprocess.Popen(["bash", "-c", f"exec > {a / 'p'}; for n in $(seq 40); do"
                                     f" printf '%.0s{c}' $(seq 4096); done"]) for c in "ABC"]
        for w in writers:
            assert w.wait(60) == 0
        os.close(hold)
        closed = time.monotonic()
        out, _ = cat.communicate(timeout=60)
        took = time.monotonic() - closed
        assert len(out) == 3 * 40 * 4096 and cat.returncode == 0
        assert took < 10, f"EOF {took:.1f} s after the last writer closed"
    finally:
        if cat.poll() is None:
            cat.kill()
            cat.wait()

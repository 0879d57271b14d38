"""Any Kafka client takes part (docs/wire-format.md): kcat next to mounts."""

from __future__ import annotations

import hashlib
import os
import select
import statistics
import subprocess
import time
import uuid

import pytest

from ..util import run, spawn, wait_blocked

pytestmark = pytest.mark.kafka


@pytest.fixture
def kmount(make_mount, kafka_bootstrap):
    prefix = f"k{uuid.uuid4().hex[:8]}."
    m = make_mount(["--kafka", kafka_bootstrap, "--topic-prefix", prefix])
    m.broker, m.prefix = kafka_bootstrap, prefix
    return m


def kcat(m, *args, input=None, timeout=30):
    r = subprocess.run(["kcat", "-b", m.broker, *args], input=input, capture_output=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def test_kcat_reads_byte_for_byte_what_dd_wrote(kmount, tmp_path):
    os.mkfifo(kmount / "p")
    data = os.urandom(5000)
    (tmp_path / "src").write_bytes(data)
    run(["dd", f"if={tmp_path/'src'}", f"of={kmount/'p'}", "bs=1000", "status=none"])
    topic = f"{kmount.prefix}p"
    meta = kcat(kmount, "-C", "-t", topic, "-e", "-q", "-f", "%S %h\n").decode().splitlines()
    assert [m.split()[0] for m in meta] == ["0", "1000", "1000", "1000", "1000", "1000", "0"]
    assert "dnpfs.kind=begin" in meta[0] and "dnpfs.kind=end" in meta[-1]
    assert all("dnpfs.kind=data" in m for m in meta[1:-1]), "each write() is one record"
    # The markers are empty: all values together are exactly the bytes dd wrote.
    assert kcat(kmount, "-C", "-t", topic, "-e", "-q", "-f", "%s") == data


def test_what_kcat_produces_comes_out_of_cat_and_its_end_marker_ends_the_session(kmount):
    os.mkfifo(kmount / "p")
    cat = spawn(["cat", str(kmount / "p")])
    wait_blocked(cat)
    topic = f"{kmount.prefix}p"
    kcat(kmount, "-P", "-t", topic, "-H", "dnpfs.session=kc1", "-H", "dnpfs.kind=data",
         input=b"from kcat\nsecond line\n")
    time.sleep(0.5)
    assert cat.poll() is None, "no EOF before the end-of-session marker"
    # kcat skips empty lines: the marker carries a "." that readers ignore.
    kcat(kmount, "-P", "-t", topic, "-H", "dnpfs.session=kc1", "-H", "dnpfs.kind=end",
         input=b".\n")
    out, _ = cat.communicate(timeout=10)
    assert cat.returncode == 0 and out == b"from kcatsecond line"


def test_plain_records_without_headers_are_data(kmount):
    os.mkfifo(kmount / "p")
    kcat(kmount, "-P", "-t", f"{kmount.prefix}p", input=b"plain one\nplain two\n")
    out = run(["head", "-c", "16", str(kmount / "p")]).stdout
    assert out == b"plain oneplain t"


def test_a_write_larger_than_a_kafka_record_is_split(kmount):
    os.mkfifo(kmount / "big")
    data = os.urandom(3 << 20)
    fd = os.open(kmount / "big", os.O_WRONLY)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)
    out = kcat(kmount, "-C", "-t", f"{kmount.prefix}big", "-e", "-q", "-f", "%S\n",
               timeout=60)
    sizes = [int(s) for s in out.split()]
    data_sizes = [s for s in sizes if s > 0]
    assert sum(data_sizes) == len(data) and max(data_sizes) <= 1_000_000
    got = run(["head", "-c", str(len(data)), str(kmount / "big")], timeout=60).stdout
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_first_byte_for_a_reader_of_waiting_data_p50_under_300ms(kmount):
    os.mkfifo(kmount / "q")
    took = []
    for i in range(12):
        run(f"printf 'msg{i:02d}' > {kmount/'q'}", shell=True)
        start = time.monotonic()
        fd = os.open(kmount / "q", os.O_RDONLY)
        try:
            assert os.read(fd, 1) == b"m"
            took.append(time.monotonic() - start)
            os.read(fd, 100)
        finally:
            os.close(fd)
    assert statistics.median(took) < 0.3, [round(t * 1000) for t in took]


def test_reader_blocked_past_max_poll_interval_keeps_its_place(kmount, make_mount):
    """Blocked 40 s, longer than the consumer's max.poll.interval (30 s) and
    session timeout: no rebalance, nothing re-delivered, the next record arrives."""
    os.mkfifo(kmount / "slow")
    run(f"printf first > {kmount/'slow'}", shell=True)
    fd = os.open(kmount / "slow", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"first"
        cat = spawn(["cat", str(kmount / "slow")])  # a second reader, same group
        time.sleep(40)
        fd2 = os.open(kmount / "slow", os.O_RDONLY | os.O_NONBLOCK)
        with pytest.raises(BlockingIOError):
            os.read(fd2, 100)  # "first" was not delivered again
        os.close(fd2)
        run(f"printf second > {kmount/'slow'}", shell=True)
        # Either reader of the group may get it; exactly one does.  Both may
        # poll readable (the session's END is there for both), so fd is read
        # without blocking: a blocking read lost to cat would wait forever.
        os.set_blocking(fd, False)
        got, deadline = b"", time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            ready = select.select([fd, cat.stdout], [], [], 1)[0]
            if cat.stdout in ready:
                got = os.read(cat.stdout.fileno(), 100)
            elif fd in ready:
                try:
                    got = os.read(fd, 100)
                except BlockingIOError:
                    pass
                if not got:
                    time.sleep(0.05)
        assert got == b"second", "nobody got the record written after the long wait"
        cat.kill()
    finally:
        os.close(fd)


def test_sixteen_pipes_written_at_once_each_read_back_whole(kmount, make_mount, tmp_path):
    """More batches ready at once than one produce request takes (8 MiB,
    dnpfs/backends/kafka/_aiokafka/produce.py, cap_requests): every pipe's bytes still
    arrive whole, in order, on another mount and in kcat."""
    names = [f"p{i}" for i in range(16)]
    data = {}
    for name in names:
        os.mkfifo(kmount / name)
        data[name] = os.urandom(3 << 20)
        (tmp_path / name).write_bytes(data[name])
    writers = [spawn(["dd", f"if={tmp_path / name}", f"of={kmount / name}", "bs=128k",
                      "status=none"]) for name in names]
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err.decode()
    other = make_mount(["--kafka", kmount.broker, "--topic-prefix", kmount.prefix])
    for name in names:
        assert run(["cat", str(other / name)], timeout=60).stdout == data[name], name
    for name in names[:2]:
        assert kcat(kmount, "-C", "-t", f"{kmount.prefix}{name}", "-e", "-q", "-f", "%s",
                    timeout=60) == data[name]

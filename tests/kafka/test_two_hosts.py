"""Two hosts: two dnpfs daemons, each in its own network namespace, reaching
the broker over a (virtual) network, as two machines would."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from ..conftest import ROOT, Mount
from ..hosts import Hosts
from ..util import run, spawn, wait_blocked, wait_for

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def hosts_broker(kafka_bootstrap):
    out = subprocess.run([str(ROOT / "scripts" / "kafka-dev"), "address", "hosts"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def two_hosts(tmp_path, hosts_broker):
    prefix = f"h{uuid.uuid4().hex[:8]}."
    with Hosts(["a", "b"], reach=hosts_broker) as hosts:
        mounts = {}
        for name in ("a", "b"):
            m = Mount(tmp_path / name, ["--kafka", hosts_broker, "--topic-prefix", prefix],
                      tmp_path / f"{name}.log", wrap=lambda argv, n=name: hosts.cmd(n, argv))
            mounts[name] = m.start()
        try:
            yield hosts, mounts["a"], mounts["b"], prefix
        finally:
            for m in mounts.values():
                m.stop()


def test_echo_on_one_host_reaches_a_blocked_cat_on_the_other(two_hosts):
    hosts, a, b, _ = two_hosts
    os.mkfifo(a / "jobs")
    wait_for(lambda: os.path.exists(b / "jobs"), 2, what="the pipe on host b")
    cat = spawn(["cat", str(b / "jobs")])
    wait_blocked(cat)
    start = time.monotonic()
    run(f"echo 'hello from a' > {a/'jobs'}", shell=True)
    out, _ = cat.communicate(timeout=10)
    assert out == b"hello from a\n" and cat.returncode == 0
    assert time.monotonic() - start < 5


def test_competing_readers_on_two_hosts_split_the_records(two_hosts):
    hosts, a, b, _ = two_hosts
    os.mkfifo(a / "work")
    wait_for(lambda: os.path.exists(b / "work"), 2, what="the pipe on host b")
    records = [f"job-{i:04d}\n".encode() for i in range(400)]
    readers = [os.open(m / "work", os.O_RDONLY | os.O_NONBLOCK | os.O_DIRECT) for m in (a, b)]
    got = {fd: [] for fd in readers}
    try:
        with open(a / "work", "wb", buffering=0) as w1, open(b / "work", "wb", buffering=0) as w2:
            for i, rec in enumerate(records):
                (w1 if i % 2 else w2).write(rec)
                if i % 50 == 0:
                    time.sleep(0.05)
                    _drain(readers, got)
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < len(records) and time.monotonic() < deadline:
            _drain(readers, got)
            time.sleep(0.05)
            # The partition belongs to one host at a time: the other takes over
            # when it closes.  Close the one that is done to hand over.
    finally:
        for fd in readers:
            os.close(fd)
    union = [r for fd in readers for r in got[fd]]
    assert sorted(union) == sorted(records), "every record exactly once across both hosts"


def _drain(readers, got):
    for fd in readers:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                break
            if not chunk:
                break
            got[fd].append(chunk)


def test_kcat_on_one_host_reads_what_dd_wrote_on_the_other(two_hosts, tmp_path):
    hosts, a, b, prefix = two_hosts
    os.mkfifo(a / "bin")
    data = os.urandom(100_000)
    (tmp_path / "src").write_bytes(data)
    run(["dd", f"if={tmp_path/'src'}", f"of={b/'bin'}", "bs=10000", "status=none"])
    broker = a.backend_args[1]
    r = hosts.run("a", ["kcat", "-C", "-b", broker, "-t", f"{prefix}bin", "-e", "-q",
                        "-f", "%s"], text=False, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data

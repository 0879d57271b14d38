"""Records as other Kafka clients produce them, read through a mount:
compressed by kcat with each codec, in transactions of aiokafka's
transactional producer, and in batches this mount cannot decode
(docs/kafka.md, "What readers see of other producers")."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

from ..util import run
from .admin import run as arun

pytestmark = pytest.mark.kafka

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.fixture
def kmount(make_mount, kafka_bootstrap):
    prefix = f"r{uuid.uuid4().hex[:8]}."

    def make(**kw):
        m = make_mount(["--kafka", kafka_bootstrap, "--topic-prefix", prefix], **kw)
        m.broker, m.prefix = kafka_bootstrap, prefix
        return m

    return make


def kcat(m, *args, input=None):
    r = subprocess.run(["kcat", "-b", m.broker, *args], input=input, capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr.decode()


def lines(tag: str, count: int = 3, size: int = 6000) -> list[bytes]:
    """Records of several KiB that compress well: librdkafka leaves a batch
    uncompressed when compressing does not make it smaller."""
    return [(f"{tag}-{i}:".encode() + b"abcdefgh" * (size // 8)) for i in range(count)]


def codecs_in(broker: str, topic: str) -> list[int]:
    """The compression codec of each batch of *topic*, as the broker stores it."""
    async def fetch():
        client = AIOKafkaClient(bootstrap_servers=broker)
        await client.bootstrap()
        try:
            client.add_topic(topic)
            await client.force_metadata_update()
            leader = client.cluster.leader_for_partition(TopicPartition(topic, 0))
            response = await client.send(leader, FetchRequest(100, 1, 4 << 20, 0,
                                                              [(topic, [(0, 0, 4 << 20)])]))
        finally:
            await client.close()
        raw = response.topics[0][1][0][-1]
        codecs, at = [], 0
        while at + 12 <= len(raw):
            length = int.from_bytes(raw[at + 8:at + 12], "big")
            codecs.append(int.from_bytes(raw[at + 21:at + 23], "big") & 7)
            at += 12 + length
        return codecs
    return arun(fetch())


@pytest.mark.parametrize("codec", list(CODECS))
def test_records_kcat_compressed_with_each_codec_come_out_of_head(kmount, codec):
    m = kmount()
    os.mkfifo(m / "z")
    topic = f"{m.prefix}z"
    sent = lines(codec)
    kcat(m, "-P", "-t", topic, "-z", codec, input=b"\n".join(sent) + b"\n")
    codecs = codecs_in(m.broker, topic)  # one batch, or more when kcat lingered less
    assert codecs and set(codecs) == {CODECS[codec]}, f"kcat sent {codecs}"
    want = b"".join(sent)
    got = run(["head", "-c", str(len(want)), str(m / "z")], timeout=30).stdout
    assert got == want


def test_a_batch_the_mount_cannot_decode_fails_one_read_and_holds_up_nothing(
        kmount, tmp_path, monkeypatch):
    """The mount runs without the codec library (cramjam): the snappy batch is
    EIO for the one read that reaches it, logged once with its topic,
    partition and offsets, and neither what follows it in the pipe nor
    another pipe fetched in the same responses waits."""
    shim = tmp_path / "nocodecs"
    shim.mkdir()
    (shim / "cramjam.py").write_text("raise ImportError('hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", str(shim))
    m = kmount()
    os.mkfifo(m / "a")
    os.mkfifo(m / "b")
    fd = os.open(m / "a", os.O_RDONLY)  # a's partition joins the mount's fetches
    try:
        kcat(m, "-P", "-t", f"{m.prefix}a", input=b"before\n")
        kcat(m, "-P", "-t", f"{m.prefix}a", "-z", "snappy",
             input=b"\n".join(lines("lost")) + b"\n")
        kcat(m, "-P", "-t", f"{m.prefix}a", input=b"after\n")
        kcat(m, "-P", "-t", f"{m.prefix}b", input=b"other pipe\n")
        assert run(["head", "-c", "10", str(m / "b")], timeout=15).stdout == b"other pipe"
        assert os.read(fd, 1000) == b"before"
        with pytest.raises(OSError) as failed:
            os.read(fd, 1000)
        assert failed.value.errno == errno.EIO
        assert os.read(fd, 1000) == b"after"
    finally:
        os.close(fd)
    # Another reader later: the group went on past it, nothing is met again.
    kcat(m, "-P", "-t", f"{m.prefix}a", input=b"later\n")
    assert run(["head", "-c", "5", str(m / "a")], timeout=15).stdout == b"later"
    log = m.log_text()
    assert "WARNING" in log and "no codec library (cramjam) for snappy, lz4, zstd" in log
    logged = [line for line in log.splitlines() if "partition 0: the records at" in line]
    assert len(logged) == 1, logged
    assert "ERROR" in logged[0]
    assert f"{m.prefix}a partition 0: the records at offsets 1-3 cannot be read" in logged[0]


def test_only_committed_transactions_are_read_in_order(kmount):
    """Another producer's transactions: committed, aborted, committed, and
    one still open, which arrives once it commits."""
    m = kmount()
    os.mkfifo(m / "t")
    topic = f"{m.prefix}t"
    loop = asyncio.new_event_loop()
    producer = None

    async def produce():
        nonlocal producer
        producer = AIOKafkaProducer(bootstrap_servers=m.broker,
                                    transactional_id=f"dnpfs-test-{uuid.uuid4().hex[:8]}")
        await producer.start()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"one,")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"ABORTED,")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"two,")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"three")  # left open

    try:
        loop.run_until_complete(asyncio.wait_for(produce(), 60))
        assert run(["head", "-c", "8", str(m / "t")], timeout=15).stdout == b"one,two,"
        fd = os.open(m / "t", os.O_RDONLY | os.O_NONBLOCK)
        try:
            with pytest.raises(BlockingIOError):
                os.read(fd, 100)  # "three": its transaction is still open
            loop.run_until_complete(asyncio.wait_for(producer.commit_transaction(), 30))
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert os.read(fd, 100) == b"three"
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "the committed record never came"
                    time.sleep(0.1)
        finally:
            os.close(fd)
    finally:
        if producer is not None:
            loop.run_until_complete(producer.stop())
        loop.close()

"""The aiokafka features dnpfs relies on, checked against a real Kafka 4.x broker.

Every test talks to the broker started by scripts/kafka-dev (fixture
``kafka_bootstrap`` in conftest.py); nothing is mocked.  Each test uses its own
topic and group names, so the tests can run against a long-lived dev broker.
aiokafka is asyncio-only and no async pytest plugin is assumed: each test runs
its coroutine with ``asyncio.run`` under a timeout (tests/kafka/admin.py).
"""

import asyncio
import json
import shutil
import subprocess
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError, OffsetMetadataTooLargeError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from .admin import create_topic, run, wait_for

pytestmark = pytest.mark.kafka

# Kafka's default for message.max.bytes (broker) and max.message.bytes (topic):
# 1 MiB + 12 bytes of record-batch log overhead.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1048588


def unique(prefix):
    return f"dnpfs-test-{prefix}-{uuid.uuid4().hex[:10]}"


async def started(client):
    await client.start()
    return client


async def consume(consumer, n, timeout=15):
    """Read exactly n records (fail if fewer arrive within timeout)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            out.extend(records)
    assert len(out) == n, f"expected {n} records, got {len(out)}"
    return out


def consumer(addr, *topics, **kw):
    kw.setdefault("auto_offset_reset", "earliest")
    kw.setdefault("enable_auto_commit", False)
    return AIOKafkaConsumer(*topics, bootstrap_servers=addr, **kw)


# --------------------------------------------------------------------------- admin

def test_admin_create_list_describe_delete(kafka_bootstrap):
    topic = unique("admin")

    async def main():
        admin = await started(AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap))
        try:
            assert topic not in await admin.list_topics()
            await create_topic(admin, topic)
            assert topic in await admin.list_topics()

            # Creating it again is refused with TOPIC_ALREADY_EXISTS (36).
            again = (await admin.create_topics([NewTopic(topic, 1, 1)])).to_object()
            assert [e["error_code"] for e in again["topic_errors"]] == [36]

            [desc] = await admin.describe_topics([topic])
            assert desc["topic"] == topic and desc["error_code"] == 0
            assert not desc["is_internal"]
            assert [(p["partition"], p["leader"], p["replicas"], p["isr"])
                    for p in desc["partitions"]] == [(0, 1, [1], [1])]

            deleted = (await admin.delete_topics([topic])).to_object()
            assert deleted["topic_error_codes"] == [{"topic": topic, "error_code": 0}]

            async def gone():
                return topic not in await admin.list_topics()

            await wait_for(gone, 10, f"topic {topic} to disappear")
            # auto.create.topics.enable=false: describing it does not bring it back.
            [desc] = await admin.describe_topics([topic])
            assert desc["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION
            assert topic not in await admin.list_topics()
        finally:
            await admin.close()

    run(main())


# --------------------------------------------------------------------------- producer

def test_idempotent_producer_roundtrip_with_headers(kafka_bootstrap):
    topic = unique("idem")
    sent = []
    for i in range(20):
        key = None if i % 5 == 0 else f"k{i}".encode()
        value = bytes((i + j) % 256 for j in range(i * 37))  # includes b"" and NULs
        headers = [("seq", str(i).encode()), ("bin", bytes([0, 255, i, 10, 13])),
                   ("empty", b""), ("seq", b"dup-key-kept")]
        sent.append((key, value, headers))

    async def main():
        admin = await started(AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap))
        await create_topic(admin, topic)
        await admin.close()

        producer = await started(AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all"))
        try:
            # The broker granted a producer id (InitProducerId) for idempotence.
            assert producer._txn_manager is not None
            assert producer._txn_manager.producer_id >= 0
            offsets = []
            for key, value, headers in sent:
                md = await producer.send_and_wait(topic, value, key=key, headers=headers)
                assert (md.topic, md.partition) == (topic, 0)
                offsets.append(md.offset)
            assert offsets == list(range(len(sent)))
        finally:
            await producer.stop()

        c = await started(consumer(kafka_bootstrap, topic))
        try:
            records = await consume(c, len(sent))
        finally:
            await c.stop()
        got = [(r.key, r.value, list(r.headers)) for r in records]
        assert [r.offset for r in records] == list(range(len(sent)))
        assert got == sent

    run(main())


# --------------------------------------------------------------------------- groups

class Recorder(ConsumerRebalanceListener):
    def __init__(self):
        self.assigned = []

    async def on_partitions_revoked(self, revoked):
        pass

    async def on_partitions_assigned(self, assigned):
        self.assigned.append(set(assigned))


def test_consumer_group_single_owner_and_failover(kafka_bootstrap):
    topic, group = unique("group"), unique("group")
    tp = TopicPartition(topic, 0)

    async def main():
        admin = await started(AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap))
        await create_topic(admin, topic)
        producer = await started(AIOKafkaProducer(bootstrap_servers=kafka_bootstrap))
        group_kw = dict(group_id=group, heartbeat_interval_ms=200,
                        session_timeout_ms=6000)
        listeners = [Recorder(), Recorder()]
        consumers = []
        pumping = None
        try:
            for lst in listeners:
                c = consumer(kafka_bootstrap, **group_kw)
                c.subscribe([topic], listener=lst)
                await c.start()
                consumers.append(c)
            c1, c2 = consumers

            async def pump():  # keep both consumers polling
                while True:
                    for c in consumers:
                        await c.getmany(timeout_ms=50)

            pumping = asyncio.ensure_future(pump())

            async def settled():
                holders = [c for c in consumers if tp in c.assignment()]
                return (all(lst.assigned for lst in listeners) and len(holders) == 1
                        and sum(len(c.assignment()) for c in consumers) == 1)

            described = {}

            async def converged():
                if not await settled():
                    return False
                resp = await admin.describe_consumer_groups([group])
                [desc] = resp[0].to_object()["groups"]
                described.update(desc)
                return desc["state"] == "Stable" and len(desc["members"]) == 2

            # A member may rejoin once more (e.g. a metadata refresh right after
            # the topic was created); wait for the group to settle, then check.
            await wait_for(converged, 20,
                           "a Stable 2-member group where one member owns the partition")
            assert described["error_code"] == 0
            assert described["protocol_type"] == "consumer"  # classic group protocol
            assert sorted(len(c.assignment()) for c in consumers) == [0, 1]

            owner = c1 if tp in c1.assignment() else c2
            other = c2 if owner is c1 else c1
            pumping.cancel()
            consumers.remove(owner)
            await owner.stop()  # LeaveGroup -> rebalance
            pumping = asyncio.ensure_future(pump())

            async def moved():
                return other.assignment() == {tp}

            t0 = time.monotonic()
            await wait_for(moved, 15, "the partition to move to the remaining member")
            took = time.monotonic() - t0
            assert took < 10, f"failover took {took:.1f} s"
            pumping.cancel()

            # The new owner actually consumes from it.
            md = await producer.send_and_wait(topic, b"after-failover")
            records = await consume(other, 1)
            assert (records[0].offset, records[0].value) == (md.offset, b"after-failover")
        finally:
            if pumping is not None:
                pumping.cancel()
            for c in consumers:
                await c.stop()
            await producer.stop()
            await admin.close()

    run(main(), timeout=45)


# --------------------------------------------------------------------------- offsets

def test_offset_commit_with_metadata(kafka_bootstrap):
    topic, group = unique("commit"), unique("commit")
    tp = TopicPartition(topic, 0)
    meta = json.dumps({
        "writer": "dnpfs-node-" + "a" * 16, "pipe": "/some/dir/pipe-name",
        "seq": 123456789, "ts": 1767225600.123, "epoch": 7,
        "note": "x" * 60,
    }, separators=(",", ":"))
    assert 180 <= len(meta.encode()) <= 260

    async def main():
        admin = await started(AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap))
        await create_topic(admin, topic)
        producer = await started(AIOKafkaProducer(bootstrap_servers=kafka_bootstrap))
        for i in range(5):
            await producer.send_and_wait(topic, f"m{i}".encode())
        await producer.stop()
        try:
            c1 = await started(consumer(kafka_bootstrap, topic, group_id=group))
            try:
                first = await consume(c1, 5)
                assert [r.value for r in first] == [f"m{i}".encode() for i in range(5)]
                await c1.commit({tp: OffsetAndMetadata(3, meta)})
                assert await c1.committed(tp) == 3
                # offset.metadata.max.bytes (default 4096) bounds the string;
                # a refused commit leaves the stored one untouched.
                with pytest.raises(OffsetMetadataTooLargeError):
                    await c1.commit({tp: OffsetAndMetadata(4, "m" * 4097)})
                assert await c1.committed(tp) == 3
            finally:
                await c1.stop()

            c2 = await started(consumer(kafka_bootstrap, topic, group_id=group))
            try:
                # consumer.committed() returns the offset only ...
                assert await c2.committed(tp) == 3
                # ... and the new member resumes from it.
                resumed = await consume(c2, 2)
                assert [(r.offset, r.value) for r in resumed] == [(3, b"m3"), (4, b"m4")]
            finally:
                await c2.stop()

            # The metadata string comes back through the admin client.
            offsets = await admin.list_consumer_group_offsets(group)
            assert offsets == {tp: OffsetAndMetadata(3, meta)}
            assert offsets[tp].metadata == meta
            offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
            assert offsets[tp] == OffsetAndMetadata(3, meta)
        finally:
            await admin.close()

    run(main())


# --------------------------------------------------------------------------- size

def test_max_record_size(kafka_bootstrap):
    topic = unique("size")

    async def main():
        admin = await started(AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap))
        await create_topic(admin, topic)
        try:
            [resp] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.BROKER, "1", {"message.max.bytes": None})])
            [res] = resp.to_object()["resources"]
            values = {e["config_names"]: e["config_value"] for e in res["config_entries"]}
            assert values == {"message.max.bytes": str(KAFKA_DEFAULT_MAX_MESSAGE_BYTES)}
        finally:
            await admin.close()

        # 1) aiokafka's own limit (max_request_size, default 1048576) refuses
        #    an oversized record before sending it.
        producer = await started(AIOKafkaProducer(bootstrap_servers=kafka_bootstrap))
        try:
            with pytest.raises(MessageSizeTooLargeError, match="max_request_size"):
                await producer.send_and_wait(topic, b"x" * 1048576)
            assert (await producer.send_and_wait(topic, b"fits")).offset == 0
        finally:
            await producer.stop()

        # 2) With the client limit raised, the broker itself refuses a batch
        #    over message.max.bytes with MESSAGE_TOO_LARGE (error code 10).
        #    A batch of one record (no key, no headers, no compression) is the
        #    value plus 72 bytes (61 batch header + 11 record framing), so the
        #    largest value the broker accepts is 1048588 - 72 = 1048516.
        producer = await started(AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=4 << 20))
        try:
            largest = KAFKA_DEFAULT_MAX_MESSAGE_BYTES - 72
            ok = await producer.send_and_wait(topic, b"y" * largest)
            assert ok.offset == 1
            with pytest.raises(MessageSizeTooLargeError) as info:
                await producer.send_and_wait(topic, b"z" * (largest + 1))
            assert info.value.errno == 10
            assert "max_request_size" not in str(info.value)  # the broker's answer
            # The producer is still usable afterwards.
            small = await producer.send_and_wait(topic, b"small")
            assert small.offset == 2
        finally:
            await producer.stop()

    run(main())


# --------------------------------------------------------------------------- kcat

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def test_kcat_interop(kafka_bootstrap):
    assert KCAT, "kcat is not installed (scripts/test installs it: apt-get install kcat)"
    topic = unique("kcat")
    tp = TopicPartition(topic, 0)

    async def main():
        admin = await started(AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap))
        await create_topic(admin, topic)
        await admin.close()

        # kcat -> aiokafka
        r = await asyncio.to_thread(
            subprocess.run,
            [KCAT, "-b", kafka_bootstrap, "-P", "-t", topic, "-p", "0",
             "-H", "k=v", "-H", "trace=abc-123"],
            input=b"hello from kcat\n", capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr.decode()

        c = await started(consumer(kafka_bootstrap))
        try:
            c.assign([tp])
            [rec] = await consume(c, 1)
            assert (rec.offset, rec.value) == (0, b"hello from kcat")
            assert list(rec.headers) == [("k", b"v"), ("trace", b"abc-123")]
        finally:
            await c.stop()

        # aiokafka -> kcat
        producer = await started(AIOKafkaProducer(bootstrap_servers=kafka_bootstrap))
        try:
            md = await producer.send_and_wait(
                topic, b"hello from aiokafka", headers=[("h1", b"x1"), ("h2", b"y2")])
            assert md.offset == 1
        finally:
            await producer.stop()

        r = await asyncio.to_thread(
            subprocess.run,
            [KCAT, "-C", "-b", kafka_bootstrap, "-t", topic, "-o", "beginning", "-e",
             "-q", "-f", "%o|%h|%s\n"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout.decode().splitlines() == [
            "0|k=v,trace=abc-123|hello from kcat",
            "1|h1=x1,h2=y2|hello from aiokafka",
        ]

    run(main(), timeout=60)

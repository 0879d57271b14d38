"""Record batches checksummed by crc32c (``_aiokafka.batches.Batch``) against the
batches aiokafka's own extension builds from the same records: the bytes on
the wire must not change, and the checksum must be Kafka's."""

from __future__ import annotations

import asyncio
import os

import crc32c
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from dnpfs.backends.kafka._aiokafka.batches import Batch, new_batch

BATCH = 1_000_000
T = 1_764_800_000_000  # a timestamp in ms, the same for both builders

RECORDS = {
    "one small record": [(b"x", [("dnpfs-kind", b"D")])],
    "a session and a marker": [(b"", [("dnpfs-session", b"s-1"), ("dnpfs-kind", b"B")]),
                               (b"data", [("dnpfs-kind", b"D")]), (b"", [("dnpfs-kind", b"E")])],
    "128 KiB writes until full": [(os.urandom(131072), [("dnpfs-kind", b"D")])] * 9,
    "a record larger than the batch": [(os.urandom(BATCH + 5), [])],
    "no value, no headers": [(None, [])],
    "many small records": [(bytes([i % 256]) * (i % 300), [("k", None)]) for i in range(3000)],
}


def fill(batch: BatchBuilder, records, state) -> tuple[int, bytes]:
    taken = 0
    for value, headers in records:
        if batch.append(timestamp=T + taken, key=None, value=value, headers=headers) is None:
            break
        taken += 1
    if state:
        batch._set_producer_state(*state)
    return taken, bytes(batch._build())


def aiokafkas(records, state) -> tuple[int, bytes]:
    batch = BatchBuilder(BATCH, 0)
    assert type(batch._builder) is DefaultRecordBatchBuilder  # its C extension
    if state:  # what aiokafka's _set_producer_state does, without its type check
        batch._builder.set_producer_state(*state)
        state = None
    return fill(batch, records, state)


@pytest.mark.parametrize("state", [None, (4711, 3, 2_000_000_000)], ids=["no pid", "idempotent"])
@pytest.mark.parametrize("name", RECORDS)
def test_same_bytes_as_aiokafkas_extension(name: str, state) -> None:
    mine = fill(Batch(BATCH, 0), RECORDS[name], state)
    assert mine == aiokafkas(RECORDS[name], state)


def test_the_checksum_is_kafkas_crc32c_and_reads_back() -> None:
    taken, data = fill(Batch(BATCH, 0), RECORDS["128 KiB writes until full"], (1, 0, 0))
    assert taken == 7  # as a 128 KiB dd fills a 1 MB batch
    batch = DefaultRecordBatch(data)
    assert batch.validate_crc()
    assert batch.crc == crc32c.crc32c(data[21:])  # after base offset, length, epoch, magic, CRC
    values = [record.value for record in batch]
    assert values == [RECORDS["128 KiB writes until full"][0][0]] * 7


def test_batches_of_large_values_only_are_checksummed_by_crc32c() -> None:
    async def made() -> tuple[type, type]:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=BATCH)
        return type(new_batch(producer, 100)), type(new_batch(producer, 131072))

    small, large = asyncio.run(made())
    assert small is BatchBuilder
    assert large is (Batch if crc32c.hardware_based else BatchBuilder)

"""Which appends wait out the producer's linger (``_appender.lingers``): the
Appender's batches handed to aiokafka's own accumulator (linger 1 ms, as the
daemon's producer), and drained at once as its sender drains them."""

from __future__ import annotations

import asyncio

from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.structs import TopicPartition

from dnpfs.backends.kafka._appender import BATCH_BYTES, Appender
from dnpfs.model import Kind, Record

TOPIC = "dnpfs.p"
TP = TopicPartition(TOPIC, 0)


class Leaders:
    """What the accumulator asks of cluster metadata: a partition's leader."""

    def leader_for_partition(self, tp: TopicPartition) -> int:
        return 1


class Producer:
    """The part of AIOKafkaProducer the Appender hands batches to, over a
    real accumulator."""

    def __init__(self) -> None:
        self._message_accumulator = MessageAccumulator(Leaders(), BATCH_BYTES, 0, 30,
                                                       linger_ms=1)

    def create_batch(self):
        return self._message_accumulator.create_builder()

    async def send_batch(self, batch, topic: str, *, partition: int):
        return await self._message_accumulator.add_batch(batch, TopicPartition(topic, partition),
                                                         timeout=1)


def sent_at_once(records: list[Record]) -> bool:
    """Whether the append's batch is drained the moment it is handed over."""
    async def main() -> bool:
        appender = Appender.__new__(Appender)
        appender.producer = Producer()
        await appender._send_batches(TOPIC, records)
        nodes, _ = appender.producer._message_accumulator.drain_by_nodes(ignore_nodes=set())
        return TP in nodes.get(1, {})

    return asyncio.run(main())


def data(n: int) -> list[Record]:
    return [Record(Kind.DATA, "s", b"x" * 100) for _ in range(n)]


def test_a_write_that_found_its_pipe_idle_goes_at_once() -> None:
    assert sent_at_once(data(1))


def test_markers_alone_and_a_last_write_with_its_close_go_at_once() -> None:
    assert sent_at_once([Record(Kind.BEGIN, "s")])
    assert sent_at_once([Record(Kind.END, "s")])
    assert sent_at_once([*data(1), Record(Kind.END, "s")])


def test_writes_that_waited_behind_each_other_linger() -> None:
    assert not sent_at_once(data(2))
    assert not sent_at_once([Record(Kind.BEGIN, "t"), *data(40)])

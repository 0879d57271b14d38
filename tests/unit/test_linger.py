"""Which appends wait out the producer's linger (``_appender.lingers``), and
that those which do not are drained at once: the Appender's batches handed
to aiokafka's own accumulator and drained as its sender drains them.  Which wait longer, a stream of many
small writes (``_appender.holds_back``)."""

from __future__ import annotations

import asyncio

from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.structs import TopicPartition

from dnpfs.backends.kafka._appender import (BATCH_BYTES, LINGER, SMALL_LINGER, Appender,
                                            holds_back, lingers)
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
        # A long linger: a batch left open is then never due within the test,
        # however slow the machine (with the daemon's 1 ms, a loaded machine
        # let it expire before the drain and the test failed now and then).
        self._message_accumulator = MessageAccumulator(Leaders(), BATCH_BYTES, 0, 30,
                                                       linger_ms=10_000)

    def create_batch(self):
        return self._message_accumulator.create_builder()

    async def send_batch(self, batch, topic: str, *, partition: int):
        return await self._message_accumulator.add_batch(batch, TopicPartition(topic, partition),
                                                         timeout=1)


def sent_at_once(records: list[Record], idle: float | None) -> bool:
    """Whether the append's batch is drained the moment it is handed over,
    the pipe's previous append over *idle* seconds before."""
    async def main() -> bool:
        appender = Appender.__new__(Appender)
        appender.producer = Producer()
        await appender._send_batches(TOPIC, records, lingers(records, idle))
        nodes, _ = appender.producer._message_accumulator.drain_by_nodes(ignore_nodes=set())
        return TP in nodes.get(1, {})

    return asyncio.run(main())


def data(n: int) -> list[Record]:
    return [Record(Kind.DATA, "s", b"x" * 100) for _ in range(n)]


IDLE = 2 * LINGER  # the latency benchmark writes 2 ms after the last message arrived
STREAM = LINGER / 10  # a writer the daemon keeps up with


def test_a_write_to_an_idle_pipe_goes_at_once() -> None:
    assert sent_at_once(data(1), None)  # the pipe's first
    assert sent_at_once(data(1), IDLE)


def test_markers_alone_and_a_last_write_with_its_close_go_at_once() -> None:
    assert sent_at_once([Record(Kind.BEGIN, "s")], None)
    assert sent_at_once([Record(Kind.END, "s")], IDLE)
    assert sent_at_once([*data(1), Record(Kind.END, "s")], IDLE)


def test_writes_that_waited_behind_each_other_linger() -> None:
    assert not sent_at_once(data(2), IDLE)
    assert not sent_at_once([Record(Kind.BEGIN, "t"), *data(40)], None)


def test_one_write_right_after_the_last_append_lingers() -> None:
    assert not sent_at_once(data(1), STREAM)
    assert not sent_at_once([Record(Kind.END, "s")], STREAM)


def test_a_stream_of_many_small_writes_waits_until_five_ms_after_the_last_append() -> None:
    assert holds_back(data(40), STREAM, True) == SMALL_LINGER - LINGER - STREAM
    assert holds_back([Record(Kind.BEGIN, "t"), *data(7)], STREAM, True) > 0
    # The hand-over back from trio took over a millisecond: still a stream.
    assert holds_back(data(40), IDLE, True) == SMALL_LINGER - LINGER - IDLE


def test_writes_after_a_pause_few_writes_and_large_ones_are_not_held_back() -> None:
    assert holds_back(data(40), None, False) == 0  # the pipe's first append
    assert holds_back(data(40), SMALL_LINGER, True) == 0  # a burst after a pause
    assert holds_back(data(7), STREAM, True) == 0  # messages a few apart
    large = [Record(Kind.DATA, "s", b"x" * (128 << 10)) for _ in range(8)]
    assert holds_back(large, STREAM, True) == 0  # bulk: its batches fill without a linger


def test_a_backlog_behind_one_slow_append_is_not_held_back() -> None:
    """Messages one at a time queued behind an append that took long (a slow
    produce round): the next append carries many, right after the last, but
    the last carried one."""
    assert holds_back(data(10), STREAM, False) == 0

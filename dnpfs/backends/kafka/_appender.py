"""Writes: one idempotent producer (acks=all) for every pipe of the mount,
on the bridge's asyncio loop, and a new one when aiokafka's stops for good."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError

from ...errors import NoSuchPipe, StoreError
from ...model import Kind, Record
from . import wire
from ._aiokafka.batches import new_batch
from ._aiokafka.produce import ProduceClient, cap_producer, producer_failed
from ._catalog import Catalog
from ._errors import describe_error

log = logging.getLogger(__name__)

APPEND_CHECK = 0.5  # while waiting for acks, check this often that the topic still exists
# aiokafka's producer keeps one request in flight per broker, and a request
# carries one record batch per partition: a pipe's write rate is a batch per
# round trip.  At 256 KiB a batch held a single 128 KiB write (two and their
# framing are just over), so `dd bs=128k` moved one record per round trip;
# 1,000,000 bytes hold seven (docs/decisions.md, "record batches of up to
# 1 MB").  Never more than the broker takes in one message (a batch is one).
BATCH_BYTES = 1_000_000
# ...and aiokafka puts every ready partition's batch into that request, up to
# 64 MB at 64 pipes, which the transport then buffers growth by growth.  Like
# the Java producer's max.request.size, batches beyond this wait for the next
# request (docs/decisions.md, "produce requests of at most 8 MiB").
REQUEST_BYTES = 8 << 20


LINGER = 0.001  # the producer's linger, in seconds (but see ``lingers``)
# A stream of many small writes (appends of SMALL_RECORDS or more, up to
# SMALL_BATCH bytes in all, one right after the other: ``holds_back``) waits
# until this long after the previous append before its batches go,
# aiokafka's linger included: Kafka's producer default since 4.0 (KIP-1030),
# and the embedded store's (sqlite/_appends.py).  Each append costs both
# threads a hand-over and a produce round, whatever it carries
# (docs/decisions.md, "Small writes, third look").
SMALL_LINGER = 0.005
SMALL_BATCH = 64 << 10
SMALL_RECORDS = 8


def lingers(records: Sequence[Record], idle: float | None) -> bool:
    """Whether an append's last batch waits out the producer's linger.

    The linger paces a stream of small writes: the writer's outbox hands
    over everything queued while the previous append was answered, so the
    longer a round takes, the more writes each request carries.  A write to
    an idle pipe gains nothing from it: an append of at most one write means
    none waited behind it, and a pipe whose previous append had been over
    for longer than a linger (*idle*; None for its first) is not being
    streamed.  Such a batch (or a session's marker alone: open, close) goes
    at once (aiokafka lingers only over open batches).

    One write right after the previous append (a stream the daemon keeps
    up with) still lingers: sending each at once made every write a request
    of its own, and small writes read at once on another mount fell
    (docs/decisions.md, "the producer lingers 1 ms, except after an idle
    spell").
    """
    if sum(record.kind is Kind.DATA for record in records) > 1:
        return True
    return idle is not None and idle < LINGER


def many_small(records: Sequence[Record]) -> bool:
    """An append of SMALL_RECORDS or more, up to SMALL_BATCH bytes in all."""
    return (len(records) >= SMALL_RECORDS
            and sum(len(record.data) for record in records) <= SMALL_BATCH)


def holds_back(records: Sequence[Record], idle: float | None, after_many: bool) -> float:
    """How long, beyond aiokafka's linger, an append waits before handing
    its batches over: until SMALL_LINGER after the pipe's previous append
    was over (*idle* ago) in a stream of many small writes, so that the
    next append carries the writes of 5 ms, not of one produce round; 0 for
    any other.  A stream: this append and the previous one (*after_many*)
    both carried many small writes, and this one follows within SMALL_LINGER
    (not a linger: on a loaded machine the hand-over back from trio alone
    takes longer).  Not held: a write after a pause, a burst that queued
    while the pipe was idle, large writes, nor the backlog of messages that
    queued behind one slow append (the latency probe's, whose tail it would
    lengthen by the hold).
    """
    if idle is None or not after_many or not many_small(records):
        return 0.0
    return max(SMALL_LINGER - LINGER - idle, 0.0)


class Appender:
    def __init__(self, catalog: Catalog, client_kwargs: Callable[[], dict[str, Any]], *,
                 message_max_bytes: int | None, max_request_size: int) -> None:
        self.catalog = catalog
        self.client_kwargs = client_kwargs
        self.message_max_bytes = message_max_bytes
        self.max_request_size = max_request_size
        self.producer: AIOKafkaProducer | None = None
        self._produced: set[str] = set()  # topics the producer tracks
        self._appended: dict[str, float] = {}  # topic -> when its last append was over
        self._streamed: set[str] = set()  # topics whose last append was many small writes
        self._producer_lock = asyncio.Lock()

    async def start(self) -> None:
        self.producer = await self._new_producer()

    async def flush(self) -> None:
        if self.producer is not None:
            await self.producer.flush()

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    def forget(self, topic: str) -> None:
        """The topic is gone: stop the producer asking for its metadata."""
        if topic in self._produced:
            self._produced.discard(topic)
            self._appended.pop(topic, None)
            self._streamed.discard(topic)
            self.producer.client.set_topics(self._produced)

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **self.client_kwargs(),
            acks="all",
            enable_idempotence=True,
            linger_ms=round(LINGER * 1000),  # but see ``lingers``
            max_batch_size=min(BATCH_BYTES, self.message_max_bytes or BATCH_BYTES),
            max_request_size=self.max_request_size,
            request_timeout_ms=30_000,
        )
        # Both made by the producer's constructor, shared with its sender:
        # produce requests are then written from the batches' buffers,
        # and hold at most REQUEST_BYTES of them.
        producer.client.__class__ = ProduceClient
        cap_producer(producer, REQUEST_BYTES)
        await producer.start()
        return producer

    async def _replace_producer(self, failed: AIOKafkaProducer, why: BaseException) -> None:
        """A new producer (a new producer id) for one whose sender stopped for
        good: after a broker restart that lost the tail of a log, aiokafka's
        idempotent producer ends on OutOfOrderSequenceNumber and would fail
        every later write (aiokafka#1017)."""
        async with self._producer_lock:
            if self.producer is not failed:
                return  # another append replaced it already
            log.warning("the Kafka producer stopped (%s); starting a new one",
                        describe_error(why))
            self.producer = await self._new_producer()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(failed.stop(), 5)

    async def append(self, name: str, records: Sequence[Record]) -> None:
        """Send every record, then wait for all acks (acks=all: in every in-sync
        replica, so durable in Kafka's sense when this returns)."""
        topic = self.catalog.names.topic(name)
        if not await self.catalog.known(name):
            raise NoSuchPipe(name)
        self._produced.add(topic)
        loop = asyncio.get_running_loop()
        last = self._appended.get(topic)
        idle = None if last is None else loop.time() - last
        linger = lingers(records, idle)
        try:
            if (wait := holds_back(records, idle, topic in self._streamed)) > 0:
                await asyncio.sleep(wait)
            for attempt in (1, 2):
                producer = self.producer
                try:
                    return await self._append(name, topic, records, linger)
                except StoreError as e:
                    why = producer_failed(producer)
                    if why is None or attempt == 2:
                        raise
                    # Sent again through a new producer: records of this append
                    # that the old one had stored are stored twice (the
                    # duplicate window of docs/kafka.md, "Broker restarts").
                    await self._replace_producer(producer, why)
                    log.info("pipe %s: writing %d records again: %s", name, len(records), e)
        finally:
            if topic in self._produced:
                self._appended[topic] = loop.time()
                if many_small(records):
                    self._streamed.add(topic)
                else:
                    self._streamed.discard(topic)

    async def _append(self, name: str, topic: str, records: Sequence[Record],
                      linger: bool) -> None:
        try:
            sent = await self._send_batches(topic, records, linger)
            acks = asyncio.ensure_future(asyncio.gather(*sent))
            while True:
                done, _ = await asyncio.wait([acks], timeout=APPEND_CHECK)
                if done:
                    acks.result()
                    return
                if not await self.catalog.known(name):
                    acks.cancel()
                    raise NoSuchPipe(name)
        except UnknownTopicOrPartitionError:
            raise NoSuchPipe(name) from None
        except KafkaError as e:
            if not await self.catalog.exists(name):
                raise NoSuchPipe(name) from None
            raise StoreError(f"Kafka did not store the records of {name}: {describe_error(e)}") \
                from None

    async def _send_batches(self, topic: str, records: Sequence[Record],
                            linger: bool = True) -> list[asyncio.Future]:
        """Hand *records* to the producer as few record batches: building them
        here costs a fraction of one send() per record (small writes ran
        several times faster).  The last batch waits out the producer's
        linger only if *linger* (``lingers``); full ones never do.  Returns
        the batches' delivery futures."""
        sent = []
        batch = None
        for record in records:
            value, headers = wire.encode_record(record)
            if batch is None:
                batch = new_batch(self.producer, len(value))
            if batch.append(timestamp=None, key=None, value=value, headers=headers) is not None:
                continue
            if batch.record_count():  # full: send it, start the next with this record
                sent.append(await self.producer.send_batch(batch, topic, partition=0))
                batch = new_batch(self.producer, len(value))
                if batch.append(timestamp=None, key=None, value=value, headers=headers):
                    continue
            # Larger than a whole batch: the producer sizes a batch for it.
            sent.append(await self.producer.send(topic, value, partition=0, headers=headers))
        if batch is not None and batch.record_count():
            if not linger:
                batch.close()  # drained at once: aiokafka lingers only over open batches
            sent.append(await self.producer.send_batch(batch, topic, partition=0))
        return sent

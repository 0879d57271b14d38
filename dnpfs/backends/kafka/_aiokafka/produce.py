"""The producer's produce requests, written from the batches' own buffers.

aiokafka encodes a ProduceRequest by joining bytes at every level of its
schema: each batch is copied into its partition's entry, each partition into
its topic's array, each topic into the request, the request after its header,
and the frame after its size; the transport then copies what the socket did
not take at once, after slicing it (another copy).  A request carries one
batch of up to 1 MB per pipe being written, so that is five or six copies of
every byte written, into freshly allocated memory, and the larger the request
the more each copy costs: with 16 pipes written at once it was a third of the
writing daemon's samples (docs/decisions.md, "produce requests written in
place").

``ProduceClient`` is the producer's aiokafka client in every other respect.
For a produce request that expects an answer it writes the frame as pieces:
a memoryview of each large batch's own buffer, the framing (and small
batches) copied into bytearrays between them, so the only copy of a large
batch left is the transport's, of what the socket does not take at once.
The batches, their sequence numbers (idempotence), retries and the response
stay aiokafka's: the response is decoded by the request struct aiokafka
would have used.

``cap_requests`` bounds what the producer's sender puts in one request,
which aiokafka leaves unbounded (docs/decisions.md, "produce requests of at
most 8 MiB").

This leans on aiokafka's connection internals (``_writer``, ``_versions``,
``_requests``, ``_next_correlation_id``, ``_request_timeout``), checked by
every test that writes to Kafka; tests/unit/test_produce_encoding.py checks
the bytes against aiokafka's own encoding; the cap leans on its
accumulator's (``_batches``, ``_cluster``, a batch's ``_builder``), checked
by tests/unit/test_request_cap.py.
"""

from __future__ import annotations

import asyncio
import struct

from aiokafka import errors as kafka_errors
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.conn import CloseReason
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.util import wait_for

_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id
_ACKS_TIMEOUT = struct.Struct(">hi")
_INT32 = struct.Struct(">i")
_PARTITION = struct.Struct(">ii")  # partition, length of its records

# Smaller batches are copied into the framing around them: a request of many
# small batches (many pipes written slowly) is then one write, as before.
LARGE_BATCH = 64 << 10


class ProduceClient(AIOKafkaClient):
    async def send(self, node_id, request, *, group=ConnectionGroup.DEFAULT):
        # acks=0 has no response to wait for: aiokafka's own path (unused by dnpfs).
        if not isinstance(request, ProduceRequest) or request.required_acks == 0:
            return await super().send(node_id, request, group=group)
        if not await self.ready(node_id, group=group):
            raise kafka_errors.NodeNotReadyError(
                f"Attempt to send a request to node which is not ready (node id {node_id}).")
        conn = self._conns[(node_id, group)]
        try:
            return await _send(conn, request)
        except asyncio.TimeoutError as e:
            # as aiokafka does: the connection is renewed for the next request
            conn.close(reason=CloseReason.CONNECTION_TIMEOUT)
            raise kafka_errors.RequestTimedOutError() from e


def _send(conn, request: ProduceRequest):
    if conn._writer is None:
        raise kafka_errors.KafkaConnectionError(
            f"No connection to broker at {conn.host}:{conn.port}")
    request_struct = request.prepare(conn._versions)
    if request_struct.API_VERSION < 3 or request_struct.FLEXIBLE_VERSION:
        return conn.send(request)  # a broker older than 0.11 (or a newer aiokafka): its way
    correlation_id = conn._next_correlation_id()
    pieces = encode(request_struct, correlation_id, conn._client_id)
    writer = conn._writer
    try:
        for piece in pieces:
            writer.write(piece)
    except OSError as e:
        conn.close(reason=CloseReason.CONNECTION_BROKEN)
        raise kafka_errors.KafkaConnectionError(
            f"Connection at {conn.host}:{conn.port} broken: {e}") from e
    fut = asyncio.get_running_loop().create_future()
    conn._requests.append((correlation_id, request_struct, fut))
    return wait_for(fut, conn._request_timeout)


def encode(request_struct, correlation_id: int, client_id: str) -> list[bytearray | memoryview]:
    """A ProduceRequest v3-v8 frame (size, header v1, body) as pieces whose
    concatenation is the frame: a memoryview of each large batch's buffer,
    everything else copied into bytearrays between them."""
    pieces: list[bytearray | memoryview] = []
    head = bytearray(4)  # the frame's size, filled in at the end
    head += _HEADER.pack(request_struct.API_KEY, request_struct.API_VERSION, correlation_id)
    head += _string(client_id)
    head += _string(request_struct.transactional_id)
    head += _ACKS_TIMEOUT.pack(request_struct.required_acks, request_struct.timeout)
    head += _INT32.pack(len(request_struct.topics))
    for topic, partitions in request_struct.topics:
        head += _string(topic)
        head += _INT32.pack(len(partitions))
        for partition, records in partitions:
            if records is None:
                head += _PARTITION.pack(partition, -1)
                continue
            head += _PARTITION.pack(partition, len(records))
            if len(records) < LARGE_BATCH:
                head += records
                continue
            pieces += (head, memoryview(records))
            head = bytearray()
    if head:
        pieces.append(head)
    _INT32.pack_into(pieces[0], 0, sum(len(piece) for piece in pieces) - 4)
    return pieces


def _string(text: str | None) -> bytes:
    if text is None:
        return b"\xff\xff"
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def cap_requests(accumulator, limit: int) -> None:
    """Make *accumulator* (the producer's) drain at most *limit* bytes of
    batches per broker at a time, or the first ready batch if it is larger.
    The others stay queued, first in line for the next request: a partition
    drained now is queued again behind them when it is next written, so
    every pipe gets its turn.

    Without it a request holds every ready partition's batch (64 MB with 64
    pipes written at once) and the transport grows its buffer batch by batch,
    each growth copying what it holds under jemalloc: the writing daemon's
    CPU per GiB doubled from 16 to 64 pipes."""
    drain = accumulator.drain_by_nodes
    cluster = accumulator._cluster

    def drain_by_nodes(ignore_nodes, muted_partitions=frozenset()):
        room: dict[int, int] = {}
        held = []
        for tp, batches in accumulator._batches.items():
            leader = cluster.leader_for_partition(tp)
            if (tp in muted_partitions or leader is None or leader == -1
                    or leader in (ignore_nodes or ()) or batches[0].remaining_linger()):
                continue  # not drained this time anyway
            size = batches[0]._builder.size()
            if leader in room and size > room[leader]:
                held.append(tp)
            else:
                room[leader] = room.get(leader, limit) - size
        if held:
            muted_partitions = frozenset(muted_partitions).union(held)
        return drain(ignore_nodes, muted_partitions)

    accumulator.drain_by_nodes = drain_by_nodes


def cap_producer(producer, limit: int) -> None:
    """``cap_requests`` on the accumulator of *producer* (an AIOKafkaProducer)."""
    cap_requests(producer._message_accumulator, limit)


def producer_failed(producer) -> BaseException | None:
    """The error that stopped *producer*'s sender for good, or None while it
    runs.  aiokafka's sender ends on OutOfOrderSequenceNumber (and
    ProducerFenced) and then fails every later send with it: only a new
    producer writes again."""
    task = producer._sender.sender_task
    if task is None or not task.done() or task.cancelled():
        return None
    return task.exception()

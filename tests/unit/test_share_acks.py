"""A share reader's acknowledgements when the request carrying them fails or
is cancelled (``close`` cancels the fetch loop mid-request).  No broker: the
reader's own connection is given a stand-in socket.

Found by tests/semantics/test_queue.py (1 run in ~12): a ShareAcknowledge
cancelled after it was written was sent again in the final one; the broker
had applied the first, refused the second whole (error 121, "not acquired"),
the END marker's ACCEPT in it was lost, and the END went to a worker on
another mount when this member left: two EOFs."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque

from aiokafka.errors import NodeNotReadyError

from dnpfs.backends.kafka._aiokafka.share_requests import ACCEPT
from dnpfs.backends.kafka._share import ShareReader


class Catalog:
    def leader(self, topic: str) -> int:
        return 0


class Brokers:
    def broker_metadata(self, node: int):
        return None  # unknown: a new connection cannot be made


class Client:
    cluster = Brokers()


class Cluster:
    catalog = Catalog()
    client = Client()

    def topic(self, name: str) -> str:
        return f"t.{name}"


class Socket:
    """A connection that takes a request (it is written) and never answers."""

    def __init__(self) -> None:
        self.sent = []

    def connected(self) -> bool:
        return True

    def send(self, request):
        self.sent.append(request)
        return asyncio.get_running_loop().create_future()

    def close(self) -> None:
        pass


def reader_with_acks(acks) -> ShareReader:
    reader = ShareReader(Cluster(), "jobs", lambda name: None, deque())
    reader.topic_id = uuid.uuid4()
    reader.session_epoch = 3
    reader._acks = list(acks)
    return reader


async def cancel_mid_request(reader: ShareReader) -> None:
    task = asyncio.create_task(reader._send_acks())
    for _ in range(10):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def test_acks_written_before_a_cancel_are_not_sent_again():
    reader = reader_with_acks([(5, ACCEPT), (6, ACCEPT)])
    socket = Socket()
    reader.link._node, reader.link._conn = 0, socket
    asyncio.run(cancel_mid_request(reader))
    assert len(socket.sent) == 1  # it went out
    assert reader._acks == []  # and is not sent a second time


def test_acks_that_never_reached_the_socket_are_kept_for_the_next_request():
    reader = reader_with_acks([(5, ACCEPT), (6, ACCEPT)])
    # no connection, and none can be made: the request is never written

    async def send() -> None:
        try:
            await reader._send_acks()
        except NodeNotReadyError:
            pass

    asyncio.run(send())
    assert reader._acks == [(5, ACCEPT), (6, ACCEPT)]

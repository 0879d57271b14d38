"""A connection of one's own to a broker, for requests that wait there.

A Kafka broker serves a connection's requests one at a time: it reads the
next only once it has answered the one before.  A share member's ShareFetch
waits at the broker (up to ``_share.FETCH_WAIT_MS``) until a record comes,
so on the cluster's one client every pipe's fetch queued behind every other
pipe's wait, and so did heartbeats, acknowledgements and metadata: a few
idle pipes slowed every busy one to a crawl (docs/decisions.md, "Work queues
on Kafka").  The fetcher keeps connections of its own for the same reason,
with one fetch for all of a mount's consumer-group pipes; a share group's
requests name one group, so each share member has a connection of its own.

Made on first use, to whichever broker the request is for (the partition's
leader: a new one when the leader moves), again after the broker closed it
or a request timed out; ``close`` drops it.  It is a ``frames.FetchConnection``,
as the fetcher's are: a ShareFetch response of a window of records (8 MiB)
is read straight into one buffer and copied once, where aiokafka's reader
copied it four times in 64 KiB steps, each a wake-up of the loop contending
for the GIL with the trio thread's reads (docs/decisions.md, "A window of
records for a reader that streams").  Its one-request-at-a-time rule holds:
a share member's requests go one after the other from its fetch loop.
"""

from __future__ import annotations

import asyncio

from aiokafka.errors import NodeNotReadyError, RequestTimedOutError

from ._aiokafka.frames import FetchConnection

REQUEST_TIMEOUT_MS = 15_000  # a frozen broker: give up, and ask again on a new connection


class OwnConnection:
    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self._node: int | None = None
        self._conn = None
        self._written: object | None = None  # the last request handed to the socket

    def written(self, request) -> bool:
        """Did *request* reach the socket?  A request cancelled or failed after
        that may still be answered by the broker: the broker reads it unless
        the connection broke first, and serves the next request on this
        connection only after it."""
        return self._written is request

    async def send(self, node: int, request):
        conn = self._conn
        if conn is None or self._node != node or not conn.connected():
            self.close()
            broker = self.cluster.client.cluster.broker_metadata(node)
            if broker is None:
                raise NodeNotReadyError(f"broker {node} is not in the metadata")
            settings = {k: v for k, v in self.cluster.consumer_kwargs().items()
                        if k != "bootstrap_servers"}
            conn = FetchConnection(broker.host, broker.port, **settings,
                                   request_timeout_ms=REQUEST_TIMEOUT_MS)
            try:
                await conn.connect()
            except BaseException:
                conn.close()
                raise
            self._node, self._conn = node, conn
        waiting = conn.send(request)  # writes the request now, or raises
        self._written = request
        try:
            return await waiting
        except asyncio.TimeoutError as e:
            self.close()  # what it was waiting for may still come: a new one next time
            raise RequestTimedOutError() from e

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._node = self._conn = None

"""A plain Kafka share consumer, the reference for the work-queue rows on
Kafka (benchmarks/queue.py): dnpfs's own share requests
(dnpfs/backends/kafka/_aiokafka/share_requests.py) without FUSE, bash or
the daemon, acquiring and accepting the records of one topic.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaClient

from dnpfs.backends.kafka._aiokafka import share_requests as rq


async def _consume(bootstrap: str, topic: str, records: int, per_fetch: int) -> float:
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        node = client.get_random_node()
        group, member = f"bench-share.{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        await client.send(node, rq.SetGroupConfig(group, {"share.auto.offset.reset": "earliest"}))
        response = await client.send(node, rq.ShareGroupHeartbeatRequest(group, member, 0,
                                                                          [topic]))
        epoch = response.member_epoch
        while response.assignment is None or not response.assignment[0]:
            await asyncio.sleep(0.1)
            response = await client.send(node, rq.ShareGroupHeartbeatRequest(
                group, member, epoch, None))
            epoch = response.member_epoch
        topic_id = response.assignment[0][0][0]
        got, session, acks = 0, 0, []
        start = time.monotonic()
        while got < records:
            fetched = await client.send(node, rq.ShareFetchRequest(
                group, member, session, topic_id, acks, per_fetch, 500, 8 << 20))
            session += 1
            acks = []
            for _, partitions, _ in fetched.responses:
                for part in partitions:
                    for first, last, _, _ in part[7]:
                        acks += [(o, rq.ACCEPT) for o in range(first, last + 1)]
            # markers are records too: the topic's first *records* records
            got += len(acks)
            if not fetched.responses:
                break
        elapsed = time.monotonic() - start
        await client.send(node, rq.ShareAcknowledgeRequest(group, member, -1, topic_id, acks))
        await client.send(node, rq.ShareGroupHeartbeatRequest(group, member, -1, None))
        return elapsed
    finally:
        await client.close()


def share_consume(bootstrap: str, topic: str, records: int, per_fetch: int) -> float:
    """Seconds to acquire and accept *records* records of *topic* (from its
    start), *per_fetch* a ShareFetch."""
    return asyncio.run(_consume(bootstrap, topic, records, per_fetch))

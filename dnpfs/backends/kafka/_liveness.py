"""Mount heartbeats on Kafka, for session leases (dnpfs/leases.py).

Each mount produces a small record keyed by its mount id to topic
``<prefix>__dnpfs_mounts`` (compacted, one partition, hidden from the
directory like every ``__`` name).  Every mount reads that topic without a
consumer group and notes, on its own monotonic clock, when it last heard from
each mount: comparing receive times, not producer timestamps, makes clock
skew between hosts harmless.  A mount heard only in the backlog read at start
counts as heard at start, so it gets a full timeout of grace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

TOPIC = "__dnpfs_mounts"
BACKLOG = 5000  # heartbeat records read back at start
TOPIC_EXISTS = 36


class Liveness:
    def __init__(self, prefix: str, admin: AIOKafkaAdminClient, replication_factor: int,
                 consumer_kwargs: Callable[[], dict[str, Any]],
                 producer: Callable[[], AIOKafkaProducer]) -> None:
        self.admin = admin
        self.replication_factor = replication_factor
        self.consumer_kwargs = consumer_kwargs
        self.producer = producer  # the mount's current one (it may be replaced)
        self.topic = prefix + TOPIC
        self.heard: dict[str, float] = {}  # mount id -> loop.time() of its last heartbeat
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        response = await self.admin.create_topics(
            [NewTopic(self.topic, 1, self.replication_factor,
                      topic_configs={"cleanup.policy": "compact"})], timeout_ms=10_000)
        [result] = response.to_object()["topic_errors"]
        if result["error_code"] not in (0, TOPIC_EXISTS):
            log.warning("cannot create %s (error %d): session leases are off",
                        self.topic, result["error_code"])
            return
        tp = TopicPartition(self.topic, 0)
        self._consumer = AIOKafkaConsumer(**self.consumer_kwargs(),
                                          enable_auto_commit=False, group_id=None)
        await self._consumer.start()
        self._consumer.assign([tp])
        end = (await self._consumer.end_offsets([tp]))[tp]
        self._consumer.seek(tp, max(0, end - BACKLOG))
        self._task = asyncio.create_task(self._listen(), name="heartbeats")

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except Exception as e:  # noqa: BLE001 - keep listening through broker trouble
                log.debug("heartbeats: %s", e)
                await asyncio.sleep(1)
                continue
            now = loop.time()
            for records in batches.values():
                for record in records:
                    if record.key:
                        self.heard[record.key.decode(errors="replace")] = now

    async def beat(self, mount_id: str) -> None:
        await self.producer().send_and_wait(self.topic, b"", key=mount_id.encode(),
                                                  partition=0)

    async def ages(self) -> dict[str, float]:
        now = asyncio.get_running_loop().time()
        return {mount: now - heard for mount, heard in self.heard.items()}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            try:
                await asyncio.wait_for(self._consumer.stop(), 5)
            except Exception as e:  # noqa: BLE001
                log.debug("stopping the heartbeat consumer: %s", e)

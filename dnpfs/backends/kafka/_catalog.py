"""Which pipes exist, and where their partitions are led: the mount's view of
the cluster's topics, on the bridge's asyncio loop.

- names: pipe NAME is topic ``<prefix>NAME``; topics that are no pipe
  (another prefix, ``__`` names, names dnpfs refuses) are left out;
- the topic list is read every REFRESH_INTERVAL and published to the trio
  thread (``Shared.publish``), so "does this pipe exist" needs no request;
  pipes that appear or disappear are told to trio (``notify``) and to the
  mount (``on_gone``: drop what it holds for a deleted pipe);
- the leader of each topic's partition, for the fetcher and ListOffsets;
- making and deleting topics, and reading a log's start and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.protocol.offset import OffsetRequest

from ...errors import InvalidName, NoSuchPipe, StoreError
from ...names import check_name
from ._errors import describe_error
from ._fetcher import READ_COMMITTED
from ._metadata import LEADER_NOT_AVAILABLE, leaders
from ._shared import Shared

log = logging.getLogger(__name__)

# docs/semantics.md promises that a pipe made or removed on another mount
# shows within a second.  Not more often: each refresh decodes the metadata of
# every topic of the cluster (_metadata.py: 6 ms of CPU for 2,000 topics).
REFRESH_INTERVAL = 0.8
VISIBLE_TIMEOUT = 5.0  # after creating or deleting a topic, wait until metadata shows it
MAX_TOPIC = 249

# Kafka error codes answered specially.
UNKNOWN_TOPIC = 3
NOT_LEADER = 6
INVALID_TOPIC = 17
TOPIC_EXISTS = 36


class Names:
    """Pipe names and topic names of one mount (its topic prefix)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def topic(self, name: str) -> str:
        return self.prefix + name

    def pipe_name(self, topic: str) -> str | None:
        """The pipe a topic stands for, or None for topics that are no pipe."""
        if topic.startswith("__") or not topic.startswith(self.prefix):
            return None
        name = topic[len(self.prefix) :]
        try:
            check_name(name)
        except InvalidName:
            return None
        return name

    def can_be_pipe(self, name: str) -> bool:
        topic = self.topic(name)
        return self.pipe_name(topic) is not None and len(topic) <= MAX_TOPIC

    def check_topic(self, name: str) -> str:
        """The topic for a new pipe *name*, or InvalidName."""
        topic = self.topic(name)
        if len(topic) > MAX_TOPIC:
            raise InvalidName(f"pipe name {name!r} is too long: with the topic prefix"
                              f" {self.prefix!r} a Kafka topic has at most {MAX_TOPIC} characters")
        if topic.startswith("__"):
            raise InvalidName(f"pipe name {name!r}: topics starting with '__' are Kafka's own")
        return topic


class Catalog:
    def __init__(
        self,
        names: Names,
        client: AIOKafkaClient,
        admin: AIOKafkaAdminClient,
        shared: Shared,
        *,
        bootstrap: str,
        replication_factor: int,
        notify: Callable[..., None],  # (name, gone=False): see base.ChangeCallback
        on_gone: Callable[[str], None],  # a pipe was deleted: drop what the mount holds for it
        on_leaders_moved: Callable[[], None],
    ) -> None:
        self.names = names
        self.client = client
        self.admin = admin
        self.shared = shared
        self.bootstrap = bootstrap
        self.replication_factor = replication_factor
        self.notify = notify
        self.on_gone = on_gone
        self.on_leaders_moved = on_leaders_moved
        self._leaders: dict[str, int] = {}  # topic -> leader of partition 0
        self._epoch = 0  # bumped by local changes to the topics
        self._refresh_now = asyncio.Event()
        self._refresher: asyncio.Task | None = None

    @property
    def topics(self) -> frozenset[str]:
        """The pipes as last seen (published to the trio thread too)."""
        return self.shared.view.topics

    def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_loop(), name="topic refresh")

    def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()

    # -- metadata ----------------------------------------------------------------
    async def _metadata(self, topics: list[str] | None) -> dict[str, int]:
        """{topic: leader of partition 0 (-1: none yet)} for existing non-internal topics.
        Never asks the broker to auto-create a topic."""
        node = self.client.get_random_node()
        if node is None:
            raise StoreError(f"no Kafka broker known (bootstrap {self.bootstrap})")
        return await leaders(self.client, node, topics)

    async def refresh(self) -> None:
        """Read every topic; tell trio about pipes that appeared or disappeared."""
        epoch = self._epoch
        found = await self._metadata(None)
        if epoch != self._epoch:
            return  # a local create/delete happened meanwhile: next round
        moved = any(self._leaders.get(t) != n for t, n in found.items())
        self._leaders = found
        if moved:
            self.on_leaders_moved()
        names = frozenset(n for t in found if (n := self.names.pipe_name(t)) is not None)
        old = self.topics
        self.shared.publish(topics=names)
        for name in sorted(old ^ names):
            if name not in names:
                self._gone(name)
            self.notify(name, True)

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_now.wait(), REFRESH_INTERVAL)
            self._refresh_now.clear()
            try:
                await asyncio.wait_for(self.refresh(), 10)
                if self.shared.view.health != "ok":
                    log.info("Kafka metadata readable again")
                    self.shared.publish(health="ok")
            except Exception as e:  # noqa: BLE001 - keep refreshing whatever happened
                if self.shared.view.health == "ok":
                    log.warning("reading Kafka metadata: %s", describe_error(e))
                    since = time.strftime("%H:%M:%S")
                    self.shared.publish(health=f"Kafka at {self.bootstrap} not answering since"
                                               f" {since}: {describe_error(e)}")

    def leader(self, topic: str) -> int:
        """The broker leading the topic's partition as last seen (-1: none known)."""
        return self._leaders.get(topic, -1)

    def stale_leaders(self) -> None:
        """A broker said it does not lead a partition (any more): read the
        metadata now rather than at the next refresh."""
        self._refresh_now.set()

    def _set_exists(self, name: str, exists: bool) -> None:
        topics = self.topics
        if (name in topics) == exists:
            return
        self._epoch += 1
        self.shared.publish(topics=topics | {name} if exists else topics - {name})
        if not exists:
            self._gone(name)
        self.notify(name, True)

    def _gone(self, name: str) -> None:
        self._leaders.pop(self.names.topic(name), None)
        self.on_gone(name)

    async def exists(self, name: str) -> bool:
        """Ask the broker (the published list may be up to REFRESH_INTERVAL old)."""
        if not self.names.can_be_pipe(name):
            return False
        topic = self.names.topic(name)
        found = await self._metadata([topic])
        if topic in found:
            self._leaders[topic] = found[topic]
        self._set_exists(name, topic in found)
        return topic in found

    async def known(self, name: str) -> bool:
        """Exists as last seen, or else as the broker says now."""
        return name in self.topics or await self.exists(name)

    async def _wait_visible(self, topic: str, present: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + VISIBLE_TIMEOUT
        while loop.time() < deadline:
            found = await self._metadata([topic])
            if (found.get(topic, -1) >= 0) == present:
                return
            await asyncio.sleep(0.02)
        log.warning("topic %s: metadata did not show it %s within %.0f s", topic,
                    "created" if present else "deleted", VISIBLE_TIMEOUT)

    # -- pipes ---------------------------------------------------------------------
    async def create(self, name: str) -> bool:
        topic = self.names.check_topic(name)
        response = await self.admin.create_topics(
            [NewTopic(topic, 1, self.replication_factor)], timeout_ms=10_000)
        [result] = response.to_object()["topic_errors"]
        code = result["error_code"]
        if code == TOPIC_EXISTS:
            return False
        if code == INVALID_TOPIC:
            raise InvalidName(f"invalid pipe name {name!r}: {result.get('error_message')}")
        if code:
            detail = result.get("error_message") or for_code(code).__name__
            raise StoreError(f"cannot create topic {topic}: {detail}")
        await self._wait_visible(topic, True)
        self._set_exists(name, True)
        return True

    async def delete(self, name: str) -> bool:
        if not self.names.can_be_pipe(name):
            return False
        topic = self.names.topic(name)
        response = await self.admin.delete_topics([topic], timeout_ms=10_000)
        [(_, code)] = [(t["topic"], t["error_code"]) for t in
                       response.to_object()["topic_error_codes"]]
        if code == UNKNOWN_TOPIC:
            self._set_exists(name, False)
            return False
        if code:
            raise StoreError(f"cannot delete topic {topic}: {for_code(code).__name__}")
        await self._wait_visible(topic, False)
        self._set_exists(name, False)
        return True

    async def list(self) -> list[str]:
        await self.refresh()
        return sorted(self.topics)

    # -- log ends --------------------------------------------------------------------
    async def end_offset(self, name: str) -> int:
        """The pipe's end offset as readers see it (read_committed: its last
        stable offset, below any transaction still open)."""
        return await self.list_offset(name, -1)

    async def list_offset(self, name: str, which: int) -> int:
        """The offset of the pipe's log end (*which* -1) or start (-2)."""
        topic = self.names.topic(name)
        for _ in range(5):
            leader = self._leaders.get(topic, -1)
            if leader < 0:
                found = await self._metadata([topic])
                if topic not in found:
                    raise NoSuchPipe(name)
                leader = self._leaders[topic] = found[topic]
                if leader < 0:
                    await asyncio.sleep(0.1)
                    continue
            response = await self.client.send(
                leader, OffsetRequest(-1, READ_COMMITTED, [(topic, [(0, which)])]))
            for _, partitions in response.topics:
                for _, code, *info in partitions:
                    if code == 0:
                        return info[0][0] if response.API_VERSION == 0 else info[1]
                    if code in (UNKNOWN_TOPIC, NOT_LEADER, LEADER_NOT_AVAILABLE) or \
                            for_code(code).retriable:
                        self._leaders.pop(topic, None)
                        await asyncio.sleep(0.05)
                        break
                    raise StoreError(f"offset {which} of {topic}: {for_code(code).__name__}")
        raise StoreError(f"offset {which} of {topic}: no partition leader")

"""Everything one mount does with Kafka, on the bridge's asyncio loop.

- a low-level client for metadata (which topics exist) and ListOffsets;
- an admin client to create and delete topics and read committed cursors;
- one idempotent producer (acks=all) for every pipe of the mount;
- one ``GroupMember`` per reader group with readers open on this mount, and
  one ``Fetcher`` that fetches the records of every partition they hold.

Topics are refreshed in the background every REFRESH_INTERVAL, so
``topics`` (read from the trio thread without locking: it is replaced, never
changed) answers "does this pipe exist" without a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    UnknownTopicOrPartitionError,
    for_code,
)
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from ...errors import Busy, DnpfsError, InvalidName, NoSuchPipe, StoreError
from ...model import Cursor, Record
from ...names import check_name
from ..base import Fetched
from . import wire
from ._aiokafka.batches import new_batch
from ._fetcher import READ_COMMITTED, Fetcher
from ._liveness import Liveness
from ._member import GroupMember, group_id
from ._metadata import LEADER_NOT_AVAILABLE, leaders
from ._aiokafka.produce import ProduceClient, cap_producer, producer_failed
from ._protocol import DeleteGroupsRequest
from .config import ClientConfig

log = logging.getLogger(__name__)

CLIENT_ID = "dnpfs"
CONNECT_TIMEOUT = 12.0
CONTROL_TIMEOUT_MS = 15_000
# docs/semantics.md promises that a pipe made or removed on another mount
# shows within a second.  Not more often: each refresh decodes the metadata of
# every topic of the cluster (_metadata.py: 6 ms of CPU for 2,000 topics).
REFRESH_INTERVAL = 0.8
VISIBLE_TIMEOUT = 5.0  # after creating or deleting a topic, wait until metadata shows it
APPEND_CHECK = 0.5  # while waiting for acks, check this often that the topic still exists
MAX_TOPIC = 249
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

# Kafka error codes dnpfs answers specially.
UNKNOWN_TOPIC = 3
NOT_LEADER = 6
INVALID_TOPIC = 17
TOPIC_EXISTS = 36
NON_EMPTY_GROUP = 68
GROUP_NOT_FOUND = 69


def describe_error(e: BaseException) -> str:
    """One readable line for an aiokafka error."""
    if isinstance(e, DnpfsError):
        return str(e)
    if isinstance(e, TimeoutError | KafkaTimeoutError):
        return "no answer in time"
    text = str(e).strip()
    name = type(e).__name__
    if isinstance(e, KafkaError) and text.startswith("[Error"):
        return text
    return f"{name}: {text}" if text and not text.startswith(name) else (text or name)


class _ConnectErrors(logging.Handler):
    """aiokafka says why a connection failed only in its log ("Unable connect
    to ...: REASON") and raises a bare "Unable to bootstrap": keep the reason."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Unable connect to"):
            reason = text.partition('": ')[2] or text
            errno = re.match(r"\[Errno (\d+)\]", reason)
            self.last = os.strerror(int(errno.group(1))) if errno else reason


class Cluster:
    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        config: ClientConfig,
        replication_factor: int,
        max_request_size: int,
        fetch_budget: int,
        notify: Callable[..., None],  # (name, gone=False): see base.ChangeCallback
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.config = config
        self.replication_factor = replication_factor
        self.max_request_size = max_request_size
        self.notify = notify
        self.topics: frozenset[str] = frozenset()  # pipe names
        self._leaders: dict[str, int] = {}  # topic -> leader of partition 0
        self._epoch = 0  # bumped by local changes to ``topics``
        self._members: dict[tuple[str, str], GroupMember] = {}
        self.fetcher = Fetcher(self, fetch_budget)
        self._refresh_now = asyncio.Event()
        self._closing: set[asyncio.Task] = set()
        self._produced: set[str] = set()  # topics the producer tracks
        self._producer_lock = asyncio.Lock()
        self._kwargs: dict[str, Any] = {}
        self.client: AIOKafkaClient | None = None
        self.admin: AIOKafkaAdminClient | None = None
        self.producer: AIOKafkaProducer | None = None
        self._refresher: asyncio.Task | None = None
        self.message_max_bytes: int | None = None
        self.health = "ok"  # or one line: what is wrong (read from the trio thread)

    # -- names -----------------------------------------------------------------
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

    def consumer_kwargs(self) -> dict[str, Any]:
        return dict(bootstrap_servers=self.bootstrap, client_id=CLIENT_ID, **self._kwargs)

    # -- life ------------------------------------------------------------------
    async def start(self) -> None:
        self._kwargs = self.config.client_kwargs()
        common = dict(bootstrap_servers=self.bootstrap, client_id=CLIENT_ID, **self._kwargs)
        # Metadata and admin requests answer a syscall (lookup, mkfifo, rm):
        # fail within seconds rather than aiokafka's default 40.
        self.client = AIOKafkaClient(**common, request_timeout_ms=CONTROL_TIMEOUT_MS)
        self.admin = AIOKafkaAdminClient(**common, request_timeout_ms=CONTROL_TIMEOUT_MS)
        capture = _ConnectErrors()
        logging.getLogger("aiokafka").addHandler(capture)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self.client.bootstrap()
                await self.admin.start()
                self.message_max_bytes = await self._message_max_bytes()
                self.producer = await self._new_producer()
                await self.fetcher.start(**common)
                await self.refresh()
        except (TimeoutError, KafkaError, OSError, StoreError) as e:
            await self._stop_clients()
            if isinstance(e, TimeoutError):
                reason = f"no answer within {CONNECT_TIMEOUT:.0f} s"
            elif isinstance(e, KafkaConnectionError):
                reason = capture.last or await self._why_unreachable()
            else:
                reason = describe_error(e)
            raise StoreError(f"cannot reach Kafka at {self.bootstrap}: {reason}") from None
        finally:
            logging.getLogger("aiokafka").removeHandler(capture)
        self._refresher = asyncio.create_task(self._refresh_loop(), name="topic refresh")
        self.liveness = Liveness(self)
        try:
            await self.liveness.start()
        except Exception as e:  # noqa: BLE001 - leases are a nicety; pipes work without
            log.warning("session leases are off: %s", describe_error(e))

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **self.consumer_kwargs(),
            acks="all",
            enable_idempotence=True,
            linger_ms=1,  # docs/decisions.md, "the producer lingers 1 ms"
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

    async def _message_max_bytes(self) -> int | None:
        """The broker's message.max.bytes (new topics inherit it), if it says."""
        node = self.client.get_random_node()
        try:
            [response] = await asyncio.wait_for(self.admin.describe_configs(
                [ConfigResource(ConfigResourceType.BROKER, str(node), {"message.max.bytes": None})]),
                5)
            for resource in response.to_object()["resources"]:
                for entry in resource["config_entries"]:
                    if entry["config_names"] == "message.max.bytes":
                        return int(entry["config_value"])
        except Exception as e:  # noqa: BLE001 - not allowed to look (ACLs): keep the default
            log.info("cannot read the broker's message.max.bytes: %s", describe_error(e))
        return None

    async def _why_unreachable(self) -> str:
        """aiokafka only says "Unable to bootstrap"; find the socket-level reason."""
        reasons = []
        for server in self.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host.strip("[]"), int(port)), 3)
                writer.close()
            except TimeoutError:
                reasons.append(f"{server}: no answer")
            except OSError as e:
                reasons.append(f"{server}: {os.strerror(e.errno) if e.errno else e}")
            else:
                reasons.append(f"{server}: connected, but the Kafka handshake failed"
                               " (wrong port, or TLS/SASL settings?)")
        return "; ".join(reasons) if len(reasons) > 1 else reasons[0].partition(": ")[2]

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if getattr(self, "liveness", None) is not None:
            await self.liveness.close()
        members = list(self._members.values())
        self._members.clear()
        await asyncio.gather(*(m.close() for m in members), *self._closing,
                             return_exceptions=True)
        if self.producer is not None:
            try:
                await asyncio.wait_for(self.producer.flush(), 5)
            except Exception as e:  # noqa: BLE001
                log.warning("flushing the producer: %s", describe_error(e))
        await self._stop_clients()

    async def _stop_clients(self) -> None:
        for closer in (
            self.producer and self.producer.stop,
            self.fetcher.close,
            self.admin and self.admin.close,
            self.client and self.client.close,
        ):
            if closer is None:
                continue
            try:
                await asyncio.wait_for(closer(), 5)
            except Exception as e:  # noqa: BLE001 - closing is best effort
                log.debug("closing a Kafka client: %s", e)

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
            self.fetcher.wake()
        names = frozenset(n for t in found if (n := self.pipe_name(t)) is not None)
        old, self.topics = self.topics, names
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
                if self.health != "ok":
                    log.info("Kafka metadata readable again")
                self.health = "ok"
            except Exception as e:  # noqa: BLE001 - keep refreshing whatever happened
                if self.health == "ok":
                    log.warning("reading Kafka metadata: %s", describe_error(e))
                    since = time.strftime("%H:%M:%S")
                    self.health = f"Kafka at {self.bootstrap} not answering since {since}:" \
                                  f" {describe_error(e)}"

    def leader(self, topic: str) -> int:
        """The broker leading the topic's partition as last seen (-1: none known)."""
        return self._leaders.get(topic, -1)

    def stale_leaders(self) -> None:
        """A broker said it does not lead a partition (any more): read the
        metadata now rather than at the next refresh."""
        self._refresh_now.set()

    def _set_exists(self, name: str, exists: bool) -> None:
        if (name in self.topics) == exists:
            return
        self._epoch += 1
        self.topics = self.topics | {name} if exists else self.topics - {name}
        if not exists:
            self._gone(name)
        self.notify(name, True)

    def _gone(self, name: str) -> None:
        """The pipe was deleted (here or elsewhere): drop what this mount holds for it."""
        topic = self.topic(name)
        self._leaders.pop(topic, None)
        if topic in self._produced:  # stop the producer asking for its metadata
            self._produced.discard(topic)
            self.producer.client.set_topics(self._produced)
        for key in [k for k in self._members if k[0] == name]:
            self._close_member(key)

    async def exists(self, name: str) -> bool:
        """Ask the broker (the cache may be up to REFRESH_INTERVAL old)."""
        topic = self.topic(name)
        if self.pipe_name(topic) is None or len(topic) > MAX_TOPIC:
            return False
        found = await self._metadata([topic])
        if topic in found:
            self._leaders[topic] = found[topic]
        self._set_exists(name, topic in found)
        return topic in found

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
    def _check_topic(self, name: str) -> str:
        topic = self.topic(name)
        if len(topic) > MAX_TOPIC:
            raise InvalidName(f"pipe name {name!r} is too long: with the topic prefix"
                              f" {self.prefix!r} a Kafka topic has at most {MAX_TOPIC} characters")
        if topic.startswith("__"):
            raise InvalidName(f"pipe name {name!r}: topics starting with '__' are Kafka's own")
        return topic

    async def create(self, name: str) -> bool:
        topic = self._check_topic(name)
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
        topic = self.topic(name)
        if self.pipe_name(topic) is None or len(topic) > MAX_TOPIC:
            return False
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

    # -- records -----------------------------------------------------------------
    async def append(self, name: str, records: Sequence[Record]) -> None:
        """Send every record, then wait for all acks (acks=all: in every in-sync
        replica, so durable in Kafka's sense when this returns)."""
        topic = self.topic(name)
        if name not in self.topics and not await self.exists(name):
            raise NoSuchPipe(name)
        self._produced.add(topic)
        for attempt in (1, 2):
            producer = self.producer
            try:
                return await self._append(name, topic, records)
            except StoreError as e:
                why = producer_failed(producer)
                if why is None or attempt == 2:
                    raise
                # Sent again through a new producer: records of this append
                # that the old one had stored are stored twice (the
                # duplicate window of docs/kafka.md, "Broker restarts").
                await self._replace_producer(producer, why)
                log.info("pipe %s: writing %d records again: %s", name, len(records), e)

    async def _append(self, name: str, topic: str, records: Sequence[Record]) -> None:
        try:
            sent = await self._send_batches(topic, records)
            acks = asyncio.ensure_future(asyncio.gather(*sent))
            while True:
                done, _ = await asyncio.wait([acks], timeout=APPEND_CHECK)
                if done:
                    acks.result()
                    return
                if name not in self.topics and not await self.exists(name):
                    acks.cancel()
                    raise NoSuchPipe(name)
        except UnknownTopicOrPartitionError:
            raise NoSuchPipe(name) from None
        except KafkaError as e:
            if not await self.exists(name):
                raise NoSuchPipe(name) from None
            raise StoreError(f"Kafka did not store the records of {name}: {describe_error(e)}") \
                from None

    async def _send_batches(self, topic: str, records: Sequence[Record]) -> list[asyncio.Future]:
        """Hand *records* to the producer as few record batches: building them
        here costs a fraction of one send() per record (small writes ran
        several times faster).  Returns the batches' delivery futures."""
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
            sent.append(await self.producer.send_batch(batch, topic, partition=0))
        return sent

    async def end_offset(self, name: str) -> int:
        """The pipe's end offset as readers see it (read_committed: its last
        stable offset, below any transaction still open)."""
        return await self.list_offset(name, -1)

    async def list_offset(self, name: str, which: int) -> int:
        """The offset of the pipe's log end (*which* -1) or start (-2)."""
        topic = self.topic(name)
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
            response = await self.client.send(leader, OffsetRequest(-1, READ_COMMITTED, [(topic, [(0, which)])]))
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

    async def committed(self, group_id: str, tp: TopicPartition) -> OffsetAndMetadata:
        offsets = await self.admin.list_consumer_group_offsets(group_id, partitions=[tp])
        return offsets.get(tp) or OffsetAndMetadata(-1, "")

    # -- reader groups -------------------------------------------------------------
    def _member(self, name: str, group: str) -> GroupMember:
        member = self._members.get((name, group))
        if member is None:
            member = self._members[(name, group)] = GroupMember(self, name, group)
            member.start()
        return member

    def _close_member(self, key: tuple[str, str]) -> asyncio.Task | None:
        member = self._members.pop(key, None)
        if member is None:
            return None
        task = asyncio.create_task(member.close(), name=f"close {member.group_id}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    def drop_member(self, member: GroupMember) -> None:
        if self._members.get((member.name, member.group)) is member:
            self._close_member((member.name, member.group))

    async def attach(self, name: str, group: str) -> int:
        if name not in self.topics and not await self.exists(name):
            raise NoSuchPipe(name)
        horizon = await self.end_offset(name)
        self._member(name, group)  # joins in the background
        return horizon

    async def detach(self, name: str, group: str) -> None:
        task = self._close_member((name, group))
        if task is None:
            return
        # A reader of the group whose open raced with this close (its attach
        # found the member just closed) must not wait for a member that no
        # longer exists: wake it, its next fetch joins the group again.
        self.notify(name)
        await asyncio.shield(task)

    async def fetch(self, name: str, group: str, max_bytes: int) -> Fetched:
        # A reader whose group was detached by a racing close gets a member again.
        return await self._member(name, group).fetch(max_bytes)

    async def consume(self, name: str, group: str, max_bytes: int, decide):
        return await self._member(name, group).consume(max_bytes, decide)

    def try_consume(self, name: str, group: str, max_bytes: int, decide, blocking: bool = False):
        """From the trio thread: ``consume`` from what is buffered, or None
        (see ``GroupMember.try_consume``).  Never creates a member."""
        member = self._members.get((name, group))
        return None if member is None else member.try_consume(max_bytes, decide, blocking)

    def peek_cursor(self, name: str, group: str) -> Cursor | None:
        """From the trio thread: the cursor of this mount's member of the
        group if it holds the partition, else None.  Never creates a member."""
        member = self._members.get((name, group))
        return member.cursor if member is not None and member.held else None

    def held_groups(self) -> int:
        """How many reader groups this mount reads now (it holds their partition)."""
        return sum(member.held for member in self._members.values())

    def membership(self, name: str, group: str) -> str | None:
        """From the trio thread: see ``Backend.membership``."""
        member = self._members.get((name, group))
        return None if member is None else member.membership()

    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        member = self._members.get((name, group))
        return member is not None and await member.commit(expected, new)

    async def delete_group(self, name: str, group: str) -> bool:
        gid = group_id(self.topic(name), group)
        coordinator = await self.admin.find_coordinator(gid)
        response = await self.client.send(coordinator, DeleteGroupsRequest([gid]))
        [(_, code)] = response.results
        if code == GROUP_NOT_FOUND:
            return False
        if code == NON_EMPTY_GROUP:
            raise Busy(f"reader group {group!r} of {name} has readers open")
        if code:
            raise StoreError(f"cannot delete reader group {group!r} of {name}:"
                             f" {for_code(code).__name__}")
        return True

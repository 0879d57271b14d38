"""One reader group on this mount: its member in the Kafka consumer group.

Lives on the bridge's asyncio loop, like every aiokafka object.

The group of pipe NAME is the consumer group ``dnpfs.<topic>`` (a named group
G: ``dnpfs.<topic>@G``), shared by every mount of the cluster.  The pipe's one
partition is assigned to one member at a time, so readers on two mounts never
deliver the same bytes.  While this member holds the partition:

- ``cursor`` is the group's authoritative cursor.  It is loaded from the
  committed offset and its metadata when the partition is assigned, moved by
  ``commit`` (a compare-and-swap, no I/O), and written back to Kafka in the
  background (see ``commit_interval``), and synchronously when the
  partition is revoked and when the member closes.
- the mount's ``Fetcher`` fetches the partition with every other partition
  the mount holds, from the cursor on, into this member's buffer; it leaves
  the partition out while the buffer is full.  The member's own consumer
  keeps the partition paused: it only takes part in the group (heartbeats,
  rebalances, commits), and a background task keeps calling its ``getmany``
  so that it never exceeds max.poll.interval, however long readers block.

A member that does not hold the partition delivers nothing.

One exception to "asyncio thread only": ``try_consume`` is called from the
trio thread, so a read whose bytes are already buffered crosses no thread.
It touches only ``cursor``, ``held`` and the buffer, never an aiokafka
object, under ``_lock``, which every change of those takes too (never across
an await); what must follow on the loop (resume fetching, commit) is queued
with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from ...model import Cursor, Kind, StoredRecord
from ..base import Fetched
from . import wire
from ._aiokafka import heartbeats
from ._records import Unreadable

if TYPE_CHECKING:
    from ._cluster import Cluster

log = logging.getLogger(__name__)

SETTLE_WAIT = 3.0  # fetch waits this long for a rebalance to end ...
CATCH_UP_WAIT = 2.0  # ... and this long for records the broker already has
# Commits: each is a request per group (Kafka has no multi-group commit) and
# a write to the broker's offsets log.  Every 100 ms bounds what kill -9
# repeats to ~100 ms of reads; but a mount reading 100 groups at once then
# sent ~250 commits a second: 14 % of its py-spy samples, and as many
# writes for the broker (docs/reliability.md, item 7).  So a mount commits
# at most COMMIT_RATE a second, shared by the groups it holds, and every
# group at least once per MAX_COMMIT_INTERVAL.
COMMIT_INTERVAL = 0.1
MAX_COMMIT_INTERVAL = 1.0
COMMIT_RATE = 100


def commit_interval(held_groups: int) -> float:
    """How long a group waits between commits while this mount holds
    *held_groups* groups."""
    return min(MAX_COMMIT_INTERVAL, max(COMMIT_INTERVAL, held_groups / COMMIT_RATE))

# The poll loop's getmany returns after this long (with nothing: the
# partition is paused); it only keeps the member within max.poll.interval.
POLL_MS = 5000
MAX_FETCH_RECORDS = 4096
STOP_TIMEOUT = 5.0

# Consumer settings: quick rebalances, so a partition moves to another mount
# soon after this one's last reader closes (0.04-0.05 s measured, at 500 ms
# and 1 s heartbeats alike).  Heartbeats no more often than this: every
# member sends them, one per pipe and mount, and an idle daemon with 200
# members spent 0.37 of a core at 500 ms (docs/decisions.md, "what an idle
# group member costs").
HEARTBEAT_MS = 1000
SESSION_TIMEOUT_MS = 10_000
CONSUMER_SETTINGS: dict[str, Any] = dict(
    enable_auto_commit=False,
    auto_offset_reset="earliest",
    heartbeat_interval_ms=HEARTBEAT_MS,
    session_timeout_ms=SESSION_TIMEOUT_MS,
    rebalance_timeout_ms=20_000,
    # The fetch loop calls getmany() every POLL_MS whether or not a reader
    # is blocked, so a reader may wait for hours (think `less`) without the
    # member being thrown out.  30 s instead of Kafka's 5 min proves it in a
    # test, and expels a mount whose loop really hangs sooner.
    max_poll_interval_ms=30_000,
    # The consumer fetches nothing: its partition stays paused (the mount's
    # Fetcher fetches), so its fetch settings do not matter ...
    fetch_max_wait_ms=POLL_MS,
    # ... except this one: aiokafka's fetch routine also wakes on a timer,
    # every 200 ms by default, to find a paused partition still paused.  It
    # wakes on every change that matters (resume, rebalance, getmany)
    # anyway; 200 members were 1,000 idle wake-ups a second.
    consumer_timeout_ms=POLL_MS,
    retry_backoff_ms=100,
)


def group_id(topic: str, group: str) -> str:
    return f"dnpfs.{topic}" if not group else f"dnpfs.{topic}@{group}"


class GroupMember(ConsumerRebalanceListener):
    def __init__(self, cluster: Cluster, name: str, group: str) -> None:
        self.cluster = cluster
        self.name = name
        self.group = group
        self.topic = cluster.topic(name)
        self.tp = TopicPartition(self.topic, 0)
        self.group_id = group_id(self.topic, group)
        self.consumer: AIOKafkaConsumer | None = None
        self.cursor = Cursor()
        self.held = False  # the partition is ours and ``cursor`` is loaded
        # When the group last confirmed this member (time.monotonic() of the
        # request it answered): past the session timeout, the broker may have
        # given the partition to another mount (see ``_confirmed``).
        self._confirmed_at = 0.0
        self._cut_off = False  # logged that it stopped handing out records
        self.closing = False
        self._committed: Cursor | None = None
        self._generation = 0  # bumped by every rebalance callback
        self._settled = asyncio.Event()  # no rebalance under way
        self._progress = asyncio.Event()  # replaced after each fetch response
        self._dirty = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._buffer: deque[StoredRecord] = deque()
        self._buffered = 0
        self._paused = False
        self._tasks: list[asyncio.Task] = []
        self._loader: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # cursor, held and the buffer change under this lock (see the module doc)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<member {self.group_id}>"

    # -- life ----------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name=f"poll {self.group_id}"),
            asyncio.create_task(self._commit_loop(), name=f"commit {self.group_id}"),
        ]

    async def close(self) -> None:
        """Commit the cursor and leave the group, so the partition moves on."""
        if self.closing:
            return
        self.closing = True
        self.cluster.fetcher.remove(self)
        self._settled.set()
        self._wake()
        try:
            await asyncio.wait_for(self._flush(final=True), STOP_TIMEOUT)
        except (TimeoutError, KafkaError) as e:
            log.warning("%s: last cursor not committed: %s", self.group_id, e)
        tasks = [t for t in (*self._tasks, self._loader) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.consumer is not None:
            try:
                await asyncio.wait_for(self.consumer.stop(), STOP_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - leaving is best effort
                log.warning("%s: leaving the group: %s", self.group_id, e)

    def _new_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(group_id=self.group_id, **self.cluster.consumer_kwargs(),
                                    **CONSUMER_SETTINGS)
        consumer.subscribe([self.topic], listener=self)
        return consumer

    async def _poll_loop(self) -> None:
        while True:
            self.consumer = self._new_consumer()
            try:
                await self.consumer.start()
                break
            except Exception as e:  # noqa: BLE001 - KafkaError, or TLS/socket trouble
                with contextlib.suppress(Exception):
                    await self.consumer.stop()
                if self.name not in self.cluster.topics:
                    self.cluster.drop_member(self)  # the pipe is gone: nothing to join
                    return
                log.warning("%s: cannot join: %s", self.group_id, e)
                await asyncio.sleep(1.0)
        heartbeats.watch(self.consumer, self._confirm)
        while True:
            try:
                # Returns nothing (the partition is paused) after POLL_MS.
                await self.consumer.getmany(timeout_ms=POLL_MS)
            except Exception as e:  # noqa: BLE001 - the loop must go on: it keeps us in the group
                log.warning("%s: poll: %s", self.group_id, e)
                await asyncio.sleep(0.5)

    # -- rebalance listener ---------------------------------------------------
    async def on_partitions_revoked(self, revoked) -> None:
        self._generation += 1
        self._settled.clear()
        self.cluster.fetcher.remove(self)
        await self._flush(final=True)
        with self._lock:
            self._clear()

    async def on_partitions_assigned(self, assigned) -> None:
        self._generation += 1
        # The group just answered this member's join (its session timer
        # started a little earlier: the margin is the join's round trip).
        self._confirm(time.monotonic())
        if self.tp in assigned:
            self.consumer.pause(self.tp)  # before it fetches: the Fetcher does
            if not self.closing:
                self._loader = asyncio.create_task(self._load(self._generation))
                return
        self.cluster.fetcher.remove(self)
        with self._lock:
            self.held = False
            self._clear()
        self._settled.set()
        self.cluster.notify(self.name)

    async def _load(self, generation: int) -> None:
        """Read the committed cursor of the partition just assigned."""
        while generation == self._generation and not self.closing:
            try:
                committed = await asyncio.wait_for(self.cluster.committed(self.group_id, self.tp), 5)
                break
            except (TimeoutError, KafkaError) as e:
                log.info("%s: reading the committed cursor: %s", self.group_id, e)
                await asyncio.sleep(0.2)
        else:
            return
        if generation != self._generation or self.closing:
            return
        with self._lock:
            self.cursor = wire.decode_cursor(committed.offset, committed.metadata)
            self._committed = self.cursor
            self.held = True
            self._trim()
        self.cluster.fetcher.add(self, self.cursor.offset)
        self._settled.set()
        log.debug("%s: holds the partition at %s", self.group_id, self.cursor)
        self.cluster.notify(self.name)

    # -- being a member ------------------------------------------------------
    def _confirm(self, sent: float) -> None:
        """On the loop: the group answered a request of this member sent at *sent*."""
        self._confirmed_at = max(self._confirmed_at, sent)
        if self._cut_off:
            self._cut_off = False
            log.info("%s: the group answers again; handing out records", self.group_id)
            self.cluster.notify(self.name)  # readers that found nothing may go on

    def _confirmed(self) -> bool:
        """Still surely the partition's holder?  A member the group has not
        answered for its session timeout may have been expelled, and another
        mount may read on from the last commit: it hands out nothing more
        (at-least-once instead of two mounts serving at once).  Read from the
        trio thread too."""
        return time.monotonic() - self._confirmed_at < SESSION_TIMEOUT_MS / 1000

    def _refuse_cut_off(self) -> None:
        if not self._cut_off:
            self._cut_off = True
            log.warning("%s: no answer from the group for %.0f s: handing out no more"
                        " records until it answers", self.group_id, SESSION_TIMEOUT_MS / 1000)

    # -- records ---------------------------------------------------------------
    def wants_records(self) -> bool:
        """For the Fetcher: fetch this member's partition now?"""
        return self.held and not self.closing and not self._paused

    def shed(self, limit: int) -> int | None:
        """For the Fetcher: drop the newest buffered records beyond *limit*
        bytes (never the first: a reader must get on); the offset of the
        first dropped, or None."""
        dropped = None
        with self._lock:
            while self._buffered > limit and len(self._buffer) > 1:
                rec = self._buffer.pop()
                self._buffered -= len(rec.data)
                dropped = rec.offset
        return dropped

    def buffered(self) -> int:
        """For the Fetcher: bytes fetched and not yet read."""
        return self._buffered

    def fetched(self, records) -> None:
        """From the Fetcher: the fetch position moved past *records* (maybe
        none: transaction markers)."""
        if records:
            self._add(records)
        self._wake()

    def _add(self, records) -> None:
        decoded = [StoredRecord(r.offset, Kind.UNREADABLE, None) if isinstance(r, Unreadable)
                   else wire.decode_record(r.offset, r.value, r.headers) for r in records]
        added = False
        with self._lock:
            for rec in decoded:
                if self._buffer and rec.offset <= self._buffer[-1].offset:
                    continue
                if self.held and rec.offset < self.cursor.offset:
                    continue
                self._buffer.append(rec)
                self._buffered += len(rec.data)
                added = True
        # Stop fetching ahead at the member's share of the mount's fetch
        # budget; go on at half of it: the next fetch arrives before it runs dry.
        if self._buffered >= self.cluster.fetcher.share:
            self._paused = True
        if added:
            self.cluster.notify(self.name)

    def _trim(self) -> None:
        """Drop buffered records below the cursor (under ``_lock``)."""
        while self._buffer and self._buffer[0].offset < self.cursor.offset:
            self._buffered -= len(self._buffer.popleft().data)

    def _resume_if_drained(self) -> None:
        """On the loop: fetch again once the buffer ran low."""
        if self._paused and self._buffered < self.cluster.fetcher.share // 2:
            self._paused = False
            self.cluster.fetcher.wake()

    def _moved(self) -> None:
        """On the loop, after the cursor moved: commit it soon, fetch on."""
        self._dirty.set()
        self._resume_if_drained()

    def _clear(self) -> None:
        self._buffer.clear()
        self._buffered = 0
        self._paused = False  # a new assignment starts unpaused

    def _wake(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _slice(self, max_bytes: int) -> list[StoredRecord]:
        """Buffered records from the cursor on, about *max_bytes* (under ``_lock``)."""
        out: list[StoredRecord] = []
        budget = max_bytes
        at, pos = self.cursor.offset, self.cursor.byte_pos
        for rec in self._buffer:
            if rec.offset < at:
                continue
            out.append(rec)
            budget -= len(rec.data) - (pos if rec.offset == at else 0)
            if budget <= 0 or len(out) >= MAX_FETCH_RECORDS:
                break
        return out

    def membership(self) -> str:
        """"reading", "standby" or "joining" (read from the trio thread too:
        two flags, each changed atomically)."""
        if self.held:
            return "reading"
        return "standby" if self._settled.is_set() and not self.closing else "joining"

    # -- what readers call -------------------------------------------------------
    async def fetch(self, max_bytes: int) -> Fetched:
        """The cursor and buffered records from it.  Waits (briefly) only for a
        rebalance under way and for records the broker already has, so that a
        reader which does not block (O_NONBLOCK, poll) sees what is stored."""
        if not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), SETTLE_WAIT)
        if not self.held or self.closing:
            return Fetched(self.cursor, [])
        if not self._confirmed():
            self._refuse_cut_off()
            return Fetched(self.cursor, [])
        with self._lock:
            fetched = Fetched(self.cursor, self._slice(max_bytes))
        if fetched.records:
            return fetched
        await self._catch_up()
        with self._lock:
            ok = self.held and not self.closing and self._confirmed()
            return Fetched(self.cursor, self._slice(max_bytes) if ok else [])

    async def _catch_up(self) -> None:
        """Wait until the records below the partition's current end are buffered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_WAIT
        end = self._known_end()
        asked = end is None
        if asked:  # not known to be behind: ask the broker (a ListOffsets)
            end = await self._end_offset()
            if end is None:
                return
        while self.held and not self._buffer and not self.closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            progress = self._progress
            position = self.cluster.fetcher.position(self)
            if position is not None and position >= end:
                if asked:
                    return
                asked = True  # reached the end we knew of, nothing buffered: ask
                end = await self._end_offset()
                if end is None:
                    return
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), max(0.0, deadline - loop.time()))

    async def _end_offset(self) -> int | None:
        try:
            return await asyncio.wait_for(self.cluster.end_offset(self.name), CATCH_UP_WAIT)
        except Exception as e:  # noqa: BLE001 - then deliver what is buffered
            log.debug("%s: end offset: %s", self.group_id, e)
            return None

    def _known_end(self) -> int | None:
        """The high watermark of the last fetch response if the fetch position
        is below it: those records are stored, so asking for the end again
        (a round trip per read that finds the buffer empty while reading a
        backlog) would tell nothing new."""
        high = self.cluster.fetcher.highwater.get(self.topic)
        position = self.cluster.fetcher.position(self)
        if high is None or position is None:
            return None
        return high if position < high else None

    async def consume(self, max_bytes: int, decide):
        """Fetch, decide and commit with no await between deciding and
        committing: readers of the group on this mount never race."""
        fetched = await self.fetch(max_bytes)
        new, result = decide(fetched)
        if new != fetched.cursor and not await self.commit(fetched.cursor, new):
            return None  # the partition moved away while fetching: fetch again
        return (result,)

    async def commit(self, expected: Cursor, new: Cursor) -> bool:
        """Compare-and-swap of the in-memory cursor; Kafka follows in the background."""
        with self._lock:
            if self.closing or not self.held or self.cursor != expected:
                return False
            self.cursor = new
            self._trim()
        self._moved()
        return True

    def try_consume(self, max_bytes: int, decide, blocking: bool = False):
        """From the trio thread: ``consume`` when the records at the cursor are
        buffered and nothing is under way (no rebalance, no close); None
        otherwise, and nothing changed: then ``consume`` on the loop.

        *blocking*: with nothing buffered, decide on no records rather than
        ask the broker what it holds (``_catch_up``, a round trip per read at
        4 records/s on 200 pipes was a sixth of all requests): the reader
        then waits, and ``_add`` or ``_load`` wakes it."""
        with self._lock:
            ready = (not self.closing and self.held and self._settled.is_set()
                     and self._confirmed())
            records = self._slice(max_bytes) if ready else []
            if not records:
                if not blocking:
                    return None
                fetched = Fetched(self.cursor, [])
                new, result = decide(fetched)
                return (result,) if new == fetched.cursor else None
            fetched = Fetched(self.cursor, records)
            new, result = decide(fetched)
            if new != fetched.cursor:
                self.cursor = new
                self._trim()
                moved = True
            else:
                moved = False
            resume = self._paused and self._buffered < self.cluster.fetcher.share // 2
        if moved and (resume or not self._dirty.is_set()):
            with contextlib.suppress(RuntimeError):  # the loop is closed: so is the member
                self._loop.call_soon_threadsafe(self._moved)
        return (result,)

    # -- committing to Kafka ---------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # A read moves the cursor before the kernel has its reply, which
            # the trio thread writes meanwhile: commit the cursor as it was
            # one interval ago, so that a daemon killed between a move and
            # its reply leaves those bytes to the next reader (at least
            # once).  Committing at once lost them when the commit won.
            moved_to = self.cursor
            await asyncio.sleep(commit_interval(self.cluster.held_groups()))
            if not await self._flush(upto=moved_to):
                self._dirty.set()  # try again after the interval

    async def _flush(self, final: bool = False, upto: Cursor | None = None) -> bool:
        """Commit the cursor if it moved (*upto*: that older cursor instead);
        *final*: then stop holding it."""
        ok = True
        async with self._commit_lock:
            while self.held:
                cursor = self.cursor if upto is None else upto
                if upto is not None and self._committed is not None and (
                        (cursor.offset, cursor.byte_pos)
                        < (self._committed.offset, self._committed.byte_pos)):
                    break  # reassigned meanwhile: the group is further on
                if cursor == self._committed:
                    if not final:
                        break
                    with self._lock:  # no reader may move the cursor past this commit
                        if self.cursor == cursor:
                            self.held = False
                            break
                    continue
                meta = wire.encode_cursor(cursor)
                sent = time.monotonic()
                try:
                    await self.consumer.commit({self.tp: OffsetAndMetadata(cursor.offset, meta)})
                except Exception as e:  # noqa: BLE001 - logged; Kafka keeps the older cursor
                    log.warning("%s: committing %s: %s", self.group_id, cursor, e)
                    ok = False
                    break
                self._committed = cursor
                self._confirm(sent)  # a commit is accepted from the current generation only
            if final:
                with self._lock:
                    self.held = False
        return ok

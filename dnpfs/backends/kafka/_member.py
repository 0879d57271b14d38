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

What the trio thread reads of a member (its cursor, whether it holds the
partition, its buffer) is its ``state``, a ``_shared.MemberState``: changed
only under that object's lock (and read under it from the trio thread), so a
read whose bytes are already buffered crosses no thread
(``Groups.try_consume``).

A member reaches the rest of the mount only through its ``MemberContext``:
the fetcher, and a few callables the mount's ``Groups`` hands it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from ...model import Cursor, Kind, StoredRecord
from ..base import Fetched
from . import wire
from ._aiokafka import heartbeats
from ._records import Unreadable
from ._shared import MemberState

if TYPE_CHECKING:
    from ._fetcher import Fetcher

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
STOP_TIMEOUT = 5.0

# Consumer settings: quick rebalances, so a partition moves to another mount
# soon after this one's last reader closes (0.04-0.05 s measured, at 500 ms
# and 1 s heartbeats alike).  Heartbeats no more often than this: every
# member sends them, one per pipe and mount, and an idle daemon with 200
# members spent 0.37 of a core at 500 ms (docs/decisions.md, "what an idle
# group member costs").
HEARTBEAT_MS = 1000
IDLE_CONNECTION_MS = 10_000
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
    # Its client keeps a connection for metadata besides the coordinator's,
    # idle but for a metadata refresh every 5 minutes: closed when idle, it
    # is a connection per reader group fewer (reopened when needed).  The
    # coordinator's, busy with heartbeats, stays open.
    connections_max_idle_ms=IDLE_CONNECTION_MS,
)


def group_id(topic: str, group: str) -> str:
    return f"dnpfs.{topic}" if not group else f"dnpfs.{topic}@{group}"


@dataclass(frozen=True)
class MemberContext:
    """What a member needs of its mount, and nothing more."""

    fetcher: Fetcher  # fetches the partition into the member's buffer while it holds it
    consumer_kwargs: Callable[[], dict[str, Any]]  # connection settings for its consumer
    pipe_exists: Callable[[str], bool]  # as last seen: no request
    committed: Callable[[str, TopicPartition], Awaitable[OffsetAndMetadata]]  # group's cursor
    end_offset: Callable[[str], Awaitable[int]]  # the pipe's end, as readers see it
    held_groups: Callable[[], int]  # how many groups the mount holds (commit pacing)
    notify: Callable[[str], None]  # wake the pipe's readers in the trio thread
    drop: Callable[[GroupMember], None]  # forget a member that cannot join (pipe gone)


class GroupMember(ConsumerRebalanceListener):
    def __init__(self, context: MemberContext, name: str, topic: str, group: str) -> None:
        self.context = context
        self.fetcher = context.fetcher
        self.name = name
        self.group = group
        self.topic = topic
        self.tp = TopicPartition(self.topic, 0)
        self.group_id = group_id(self.topic, group)
        self.consumer: AIOKafkaConsumer | None = None
        self.state = MemberState(SESSION_TIMEOUT_MS / 1000)  # what the trio thread reads
        self._cut_off = False  # logged that it stopped handing out records
        self._committed: Cursor | None = None
        self._generation = 0  # bumped by every rebalance callback
        self._settled = asyncio.Event()  # no rebalance under way (state.settled, to await)
        self._progress = asyncio.Event()  # replaced after each fetch response
        self._dirty = asyncio.Event()  # state.dirty, to await
        self._commit_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._loader: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<member {self.group_id}>"

    @property
    def cursor(self) -> Cursor:
        return self.state.cursor

    @property
    def held(self) -> bool:
        return self.state.held

    @property
    def closing(self) -> bool:
        return self.state.closing

    def _set_settled(self, settled: bool) -> None:
        with self.state.lock:
            self.state.settled = settled
        if settled:
            self._settled.set()
        else:
            self._settled.clear()

    # -- life ----------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.state.tell_loop = self._tell_loop
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name=f"poll {self.group_id}"),
            asyncio.create_task(self._commit_loop(), name=f"commit {self.group_id}"),
        ]

    async def close(self) -> None:
        """Commit the cursor and leave the group, so the partition moves on."""
        with self.state.lock:
            if self.state.closing:
                return
            self.state.closing = True
        self.fetcher.remove(self)
        self._set_settled(True)
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
        consumer = AIOKafkaConsumer(group_id=self.group_id, **self.context.consumer_kwargs(),
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
                if not self.context.pipe_exists(self.name):
                    self.context.drop(self)  # the pipe is gone: nothing to join
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
        self._set_settled(False)
        self.fetcher.remove(self)
        await self._flush(final=True)
        with self.state.lock:
            self.state.clear_locked()

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
        self.fetcher.remove(self)
        with self.state.lock:
            self.state.held = False
            self.state.clear_locked()
        self._set_settled(True)
        self.context.notify(self.name)

    async def _load(self, generation: int) -> None:
        """Read the committed cursor of the partition just assigned."""
        while generation == self._generation and not self.closing:
            try:
                committed = await asyncio.wait_for(
                    self.context.committed(self.group_id, self.tp), 5)
                break
            except (TimeoutError, KafkaError) as e:
                log.info("%s: reading the committed cursor: %s", self.group_id, e)
                await asyncio.sleep(0.2)
        else:
            return
        if generation != self._generation or self.closing:
            return
        cursor = wire.decode_cursor(committed.offset, committed.metadata)
        with self.state.lock:
            self.state.cursor = self._committed = cursor
            self.state.held = True
            self.state.trim_locked()
        self.fetcher.add(self, cursor.offset)
        self._set_settled(True)
        log.debug("%s: holds the partition at %s", self.group_id, cursor)
        self.context.notify(self.name)

    # -- being a member ------------------------------------------------------
    def _confirm(self, sent: float) -> None:
        """On the loop: the group answered a request of this member sent at *sent*."""
        with self.state.lock:
            self.state.confirmed_at = max(self.state.confirmed_at, sent)
        if self._cut_off:
            self._cut_off = False
            log.info("%s: the group answers again; handing out records", self.group_id)
            self.context.notify(self.name)  # readers that found nothing may go on

    def _refuse_cut_off(self) -> None:
        if not self._cut_off:
            self._cut_off = True
            log.warning("%s: no answer from the group for %.0f s: handing out no more"
                        " records until it answers", self.group_id, SESSION_TIMEOUT_MS / 1000)

    # -- records ---------------------------------------------------------------
    def wants_records(self) -> bool:
        """For the Fetcher: fetch this member's partition now?"""
        state = self.state
        with state.lock:
            return state.held and not state.closing and not state.paused

    def set_share(self, share: int) -> None:
        """From the Fetcher: the member may buffer about *share* bytes; once
        paused there, it fetches again below half of it (the next response
        then arrives before the buffer runs dry)."""
        with self.state.lock:
            self.state.resume_below = share // 2

    def shed(self, limit: int, keep_first: bool = True) -> int | None:
        """For the Fetcher: drop the newest buffered records beyond *limit*
        bytes; the offset of the first dropped, or None.

        *keep_first*: never the first, so that a reader gets on (a fetch
        brings at least a whole batch, whatever it asked for).  Else a record
        larger than the share goes too, and the member fetches no more until
        a reader asks (``fetch``): a reader that took part of a record and
        keeps its file open, idle, does not hold the rest of it beyond the
        member's share."""
        dropped = None
        state = self.state
        with state.lock:
            while state.buffered > limit and len(state.buffer) > keep_first:
                rec = state.buffer.pop()
                state.buffered -= len(rec.data)
                dropped = rec.offset
            if not state.buffer and dropped is not None:
                state.paused = True  # until a reader asks
        return dropped

    def buffered(self) -> int:
        """For the Fetcher: bytes fetched and not yet read."""
        return self.state.buffered

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
        state = self.state
        with state.lock:
            for rec in decoded:
                if state.buffer and rec.offset <= state.buffer[-1].offset:
                    continue
                if state.held and rec.offset < state.cursor.offset:
                    continue
                state.buffer.append(rec)
                state.buffered += len(rec.data)
                added = True
            # Stop fetching ahead at the member's share of the mount's fetch budget.
            if state.buffered >= self.fetcher.share:
                state.paused = True
        if added:
            self.context.notify(self.name)

    def moved(self) -> None:
        """On the loop, after the cursor moved: commit it soon, fetch on once
        the buffer ran low."""
        with self.state.lock:
            self.state.dirty = True
            resume = self.state.drained_locked()
            if resume:
                self.state.paused = False
        self._dirty.set()
        if resume:
            self.fetcher.wake()

    def _tell_loop(self) -> None:
        """From the trio thread, after ``MemberState.try_consume`` moved the cursor."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: so is the member
            self._loop.call_soon_threadsafe(self.moved)

    def _wake(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    # -- what readers call -------------------------------------------------------
    async def fetch(self, max_bytes: int) -> Fetched:
        """The cursor and buffered records from it.  Waits (briefly) only for a
        rebalance under way and for records the broker already has, so that a
        reader which does not block (O_NONBLOCK, poll) sees what is stored."""
        if not self._settled.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), SETTLE_WAIT)
        state = self.state
        with state.lock:
            resume = state.paused and not state.buffer  # shed it all (``shed``)
            if resume:
                state.paused = False
        if resume:
            self.fetcher.wake()
        with state.lock:
            if not state.held or state.closing:
                return Fetched(state.cursor, [])
            confirmed = state.confirmed()
            if confirmed:
                fetched = Fetched(state.cursor, state.slice_locked(max_bytes))
        if not confirmed:
            self._refuse_cut_off()
            return Fetched(self.cursor, [])
        if fetched.records:
            return fetched
        await self._catch_up()
        with state.lock:
            ok = state.held and not state.closing and state.confirmed()
            return Fetched(state.cursor, state.slice_locked(max_bytes) if ok else [])

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
        while self.held and not self.state.buffer and not self.closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            progress = self._progress
            position = self.fetcher.position(self)
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
            return await asyncio.wait_for(self.context.end_offset(self.name), CATCH_UP_WAIT)
        except Exception as e:  # noqa: BLE001 - then deliver what is buffered
            log.debug("%s: end offset: %s", self.group_id, e)
            return None

    def _known_end(self) -> int | None:
        """The high watermark of the last fetch response if the fetch position
        is below it: those records are stored, so asking for the end again
        (a round trip per read that finds the buffer empty while reading a
        backlog) would tell nothing new."""
        high = self.fetcher.highwater.get(self.topic)
        position = self.fetcher.position(self)
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
        state = self.state
        with state.lock:
            if state.closing or not state.held or state.cursor != expected:
                return False
            state.cursor = new
            state.trim_locked()
        self.moved()
        return True

    # -- committing to Kafka ---------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await self._dirty.wait()
            # A read moves the cursor before the kernel has its reply, which
            # the trio thread writes meanwhile: commit the cursor as it was
            # one interval ago, so that a daemon killed between a move and
            # its reply leaves those bytes to the next reader (at least
            # once).  Committing at once lost them when the commit won.
            with self.state.lock:
                self.state.dirty = False
                moved_to = self.state.cursor
            self._dirty.clear()
            await asyncio.sleep(commit_interval(self.context.held_groups()))
            if not await self._flush(upto=moved_to):
                with self.state.lock:
                    self.state.dirty = True
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
                    with self.state.lock:  # no reader may move the cursor past this commit
                        if self.state.cursor == cursor:
                            self.state.held = False
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
                with self.state.lock:
                    self.state.held = False
        return ok

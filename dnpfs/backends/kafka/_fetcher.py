"""One fetch loop per mount (and partition leader) for every partition its
group members hold.

Each member used to fetch through its own aiokafka consumer: 200 pipes read
on a mount were 200 fetch loops on 200 connections, and under load every
record came back in a fetch response of its own, a fifth of the asyncio
thread's time (docs/reliability.md, item 6).  The members still join their
consumer groups with aiokafka (heartbeats, rebalances, commits) but keep
their partition paused there; this fetcher asks each leader for all of them
in one request, and a response carries the records of every pipe that has
some.

Lives on the bridge's asyncio loop.  A member takes part with ``add`` once
it holds its partition (at its cursor) and leaves with ``remove``; while its
buffer is full (``member.wants_records`` false) it is left out.  Changes take
effect with the next request: at once when no request is waiting at the
broker, else within FETCH_WAIT_MS.

Each loop keeps an incremental fetch session with its broker (KIP-227,
Fetch v7+): a request names only the partitions whose position moved, and a
response only those with news.  Without one, every request and response
listed every held partition: with 110 pipes read per mount and records
arriving every few milliseconds, that listing was most of what the daemon
and the broker spent on fetching (docs/decisions.md, "fetch sessions").
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiokafka.client import AIOKafkaClient
from aiokafka.conn import CloseReason
from aiokafka.errors import NodeNotReadyError, RequestTimedOutError

from ._aiokafka.fetch_request import SessionFetchRequest
from ._aiokafka.frames import FetchConnection, FramePool
from ._records import (FetchResponse, Unreadable, decode_fetch_v11, position_after,
                       read_records)

if TYPE_CHECKING:
    from ._catalog import Catalog
    from ._member import GroupMember

log = logging.getLogger(__name__)

# How long a request waits at the broker when none of its partitions has
# records.  Records end the wait at once; this only bounds how long a
# partition added meanwhile waits for its first request, and what an idle
# mount costs (a request and a response listing every held partition).
FETCH_WAIT_MS = 250
# Per partition and response at most: ~128 records of 128 KiB.  Each request
# waits for the broker's first byte, a cost per request that a larger
# response spreads over more records (docs/decisions.md, "16 MiB fetches").
PARTITION_BYTES = 16 << 20
RESPONSE_BYTES = 16 << 20  # per response, all partitions together, at most
# The mount's fetch budget is shared by the members it holds (``share``):
# each buffers at most about that much, and never less than MIN_SHARE
# however many there are, nor more than MAX_SHARE however few.
MIN_SHARE = 64 << 10
MAX_SHARE = 2 * PARTITION_BYTES
# Responses whose records are views of them, not copies: a member buffers up
# to MAX_SHARE (two responses), the next one is read meanwhile.  Their
# buffers count against the fetch budget: never more than it holds.
KEPT_RESPONSES = 3
# A response is larger than the bytes it asked for by its fields, and by up
# to a whole batch (1 MB) when its first partition's batch is larger.
FRAME_EXTRA = (1 << 20) + (64 << 10)
RETRY_WAIT = 0.5  # after a failed request (broker away)
ERROR_WAIT = 0.1  # after a partition's error (leader moved, topic gone)
REQUEST_TIMEOUT_MS = 15_000  # a frozen broker: give up and ask again
READ_COMMITTED = 1  # isolation level: no records of open or aborted transactions
CLOSE_WAIT = 0.5  # for the broker to close a fetch session when the mount stops

# Kafka error codes the fetcher answers specially.
OFFSET_OUT_OF_RANGE = 1
EARLIEST = -2
# After a small response that handed records over, the fetch loop lets the
# GIL go for this long before it builds its next request: the trio thread,
# woken to answer a blocked read(), runs first (docs/decisions.md, "Kafka:
# the producer lingers 1 ms, except after an idle spell").  Not after large
# responses: a bulk reader is not waiting on one record.
HAND_OVER_PAUSE = 0.0001
SMALL_RESPONSE = 64 << 10
# The next request goes out before a response's records are handed over only
# after responses bringing at least this much (a backlog read): for a reader
# waiting on one record the hand-over comes first.
AHEAD_FROM = 1 << 20
FETCH_SESSION_ID_NOT_FOUND = 70
INVALID_FETCH_SESSION_EPOCH = 71


class Ahead:
    """A request sent before the previous response was handed over, and
    what it was asked with."""

    __slots__ = ("sent", "due", "start", "sizes")

    def __init__(self, sent: asyncio.Future, due: dict, start: dict, sizes: dict) -> None:
        self.sent, self.due, self.start, self.sizes = sent, due, start, sizes

    def cancel(self) -> None:
        self.sent.cancel()
        # Its answer, if it comes, is not wanted: nor its error.
        self.sent.add_done_callback(lambda f: f.cancelled() or f.exception())


class Want:
    """One member's place in the partition: where its next fetch starts."""

    __slots__ = ("member", "topic", "position", "resetting")

    def __init__(self, member: GroupMember, position: int) -> None:
        self.member = member
        self.topic = member.topic
        self.position = position
        self.resetting = False  # asking for the log start after OFFSET_OUT_OF_RANGE


class Fetcher:
    def __init__(self, catalog: Catalog, budget: int, check_crcs: bool = True) -> None:
        # Where each partition is led (``leader``, ``stale_leaders``) and
        # where a log starts (``list_offset``): all the fetcher asks of the mount.
        self.catalog = catalog
        # Records fetched and not yet read, all members together, stay about
        # within the budget: without it, every member buffered up to
        # MAX_SHARE, 100 readers holding their files open 1 GiB
        # (docs/decisions.md, "a fetch budget per mount").
        self.budget = budget
        self.check_crcs = check_crcs  # the mount's check.crcs (config.ClientConfig)
        self.share = MAX_SHARE  # what one member may buffer
        # Response buffers that records view (docs/decisions.md, "records
        # viewed in the fetch response"), the budget's: a reader slow on one
        # record holds its whole response.
        frame = min(RESPONSE_BYTES, budget) + FRAME_EXTRA
        self.frames = FramePool(min(KEPT_RESPONSES, budget // frame), frame)
        self.client: AIOKafkaClient | None = None  # metadata: where each broker is
        self._connect: dict = {}  # FetchConnection's settings
        self._conns: dict[int, FetchConnection] = {}
        # topic -> where its readable records end (the last stable offset:
        # read_committed sees nothing of a transaction still open) in its last response
        self.highwater: dict[str, int] = {}
        self._unreadable: dict[str, int] = {}  # topic -> last batch logged as unreadable
        self._wants: dict[GroupMember, Want] = {}
        self._loops: dict[int, asyncio.Task] = {}
        self.sessions: dict[int, Session] = {}  # node -> its loop's fetch session
        self._changed = asyncio.Event()
        self._resets: set[asyncio.Task] = set()
        self._closed = False

    async def start(self, **client_kwargs) -> None:
        # Connections of its own: a request waiting at the broker must not
        # hold up metadata and ListOffsets on the cluster's client.
        self.client = AIOKafkaClient(**client_kwargs, request_timeout_ms=REQUEST_TIMEOUT_MS)
        self._connect = {k: v for k, v in client_kwargs.items() if k != "bootstrap_servers"}
        self._connect["request_timeout_ms"] = REQUEST_TIMEOUT_MS
        await self.client.bootstrap()

    async def _send(self, node: int, request):
        """*request* to broker *node* on the fetcher's connection to it."""
        conn = self._conns.get(node)
        if conn is None or not conn.connected():
            broker = self.client.cluster.broker_metadata(node)
            if broker is None:
                raise NodeNotReadyError(f"broker {node} is not in the metadata")
            conn = FetchConnection(broker.host, broker.port, **self._connect, pool=self.frames)
            try:
                await conn.connect()
            except BaseException:
                conn.close()
                raise
            self._conns[node] = conn
        try:
            return await conn.send(request)
        except asyncio.TimeoutError as e:
            conn.close(reason=CloseReason.CONNECTION_TIMEOUT)  # a new one next time
            raise RequestTimedOutError() from e

    async def close(self) -> None:
        self._closed = True
        for task in self._loops.values():
            task.cancel()
        await asyncio.gather(*self._loops.values(), return_exceptions=True)
        self._loops.clear()
        # Give the broker its session slots back (it has 1,000 by default,
        # shared by every consumer; an abandoned one is kept for 2 minutes).
        # Best effort, all brokers at once: one away is not waited for long.
        closing = [asyncio.wait_for(self._send(node, session.closing()), CLOSE_WAIT)
                   for node, session in self.sessions.items() if session.id and session.epoch]
        await asyncio.gather(*closing, return_exceptions=True)
        self.sessions.clear()
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        if self.client is not None:
            try:
                await asyncio.wait_for(self.client.close(), 5)
            except Exception as e:  # noqa: BLE001 - closing is best effort
                log.debug("closing the fetch client: %s", e)

    # -- what members call -------------------------------------------------------
    def add(self, member: GroupMember, position: int) -> None:
        self._wants[member] = Want(member, max(0, position))
        self._reshare()
        self.wake()

    def _reshare(self) -> None:
        """Split the budget among the members held.  Members over a smaller
        share drop the records beyond it and fetch them again when their
        turn comes: else the first readers of a mount kept what they fetched
        while the budget was theirs alone (1,000 readers opened one after the
        other held ~3.5 times the budget)."""
        share = max(MIN_SHARE, min(MAX_SHARE, self.budget // max(1, len(self._wants))))
        for want in self._wants.values():
            want.member.set_share(share)
            if share < self.share:
                dropped = want.member.shed(share, keep_first=False)
                if dropped is not None and dropped < want.position:
                    want.position = dropped
        self.share = share

    def remove(self, member: GroupMember) -> None:
        want = self._wants.pop(member, None)
        if want is None:
            return
        if all(w.topic != want.topic for w in self._wants.values()):
            self.highwater.pop(want.topic, None)
            self._unreadable.pop(want.topic, None)
        self._reshare()
        self.wake()

    def position(self, member: GroupMember) -> int | None:
        """Where the member's next fetch starts: every record below it was handed over."""
        want = self._wants.get(member)
        return None if want is None or want.resetting else want.position

    def wake(self) -> None:
        """Something changed (a member added, removed or resumed; leaders moved)."""
        if self._closed:
            return
        self._changed.set()
        self._changed = asyncio.Event()
        for want in self._wants.values():
            node = self.catalog.leader(want.topic)
            if node >= 0 and node not in self._loops:
                self._loops[node] = asyncio.create_task(self._loop(node), name=f"fetch {node}")

    # -- fetching ------------------------------------------------------------------
    def _due(self, node: int) -> dict[str, list[Want]]:
        due: dict[str, list[Want]] = {}
        for want in self._wants.values():
            if want.member.wants_records() and not want.resetting and \
                    self.catalog.leader(want.topic) == node:
                due.setdefault(want.topic, []).append(want)
        return due

    async def _loop(self, node: int) -> None:
        failing = False
        session = self.sessions[node] = Session()
        ahead: Ahead | None = None  # the next request, sent before the last response was handed over
        try:
            while True:
                if ahead is None:
                    changed = self._changed
                    due = self._due(node)
                    if not due:
                        await changed.wait()
                        continue
                    # Members of several reader groups of one pipe share a
                    # request: it starts at the lowest of their positions.
                    start = {topic: min(w.position for w in wants) for topic, wants in due.items()}
                    # Each asks for what its share lacks (the fullest member
                    # of a pipe decides): the broker sends no more, except
                    # that the first partition of a response with records
                    # brings at least one batch.
                    sizes = {topic: max(self.share - max(w.member.buffered() for w in wants),
                                        self.share // 4) for topic, wants in due.items()}
                    sent = self._send(node, session.request(start, sizes, self.budget))
                else:
                    sent, due, start, sizes = ahead.sent, ahead.due, ahead.start, ahead.sizes
                    ahead = None
                try:
                    response = await sent
                    if not session.answered(response, start, sizes):
                        continue  # the broker lost the session: ask again in full
                    ahead = self._ask_ahead(node, session, due, start, sizes, response)
                    ok, handed = self._deliver(node, due, start, response)
                    del response  # not kept viewed while the next one is read
                except Exception as e:  # noqa: BLE001 - the loop must go on: readers wait on it
                    # Broker away or frozen (KafkaError, OSError), or a response
                    # that cannot be read (a corrupt batch): ask again, logged
                    # once, in full (what the broker holds of the session is unknown).
                    if ahead is not None:
                        ahead.cancel()
                        ahead = None
                    session.restart()
                    if not failing:
                        log.warning("fetching from broker %d: %s", node, e or type(e).__name__)
                    failing = True
                    self.catalog.stale_leaders()
                    self.client.force_metadata_update()  # a broker it does not know yet?
                    await asyncio.sleep(RETRY_WAIT)
                    continue
                if failing:
                    log.info("fetching from broker %d again", node)
                    failing = False
                if 0 < handed <= SMALL_RESPONSE:
                    time.sleep(HAND_OVER_PAUSE)
                if not ok:
                    # A partition answered with an error (its leader moved, its
                    # topic is gone): such answers come at once, so do not ask
                    # again before the metadata had a chance to change.
                    await asyncio.sleep(ERROR_WAIT)
        finally:
            if ahead is not None:
                ahead.cancel()

    def _ask_ahead(self, node: int, session: Session, due: dict[str, list[Want]],
                   start: dict[str, int], sizes: dict[str, int], response) -> Ahead | None:
        """Send the request after *response* before its records are handed
        over, when that is safe and worth it: a large response (a backlog
        read) whose buffer is its own (``viewed``: the next one is read
        elsewhere), every partition without error, the same members due,
        and room in each member's share for what this one brings and a
        quarter more.  The next positions come from the batches' headers
        (``position_after``); the hand-over (~2.5 ms of a 16 MiB round:
        CRCs, records, members) then overlaps the next response's way
        (docs/decisions.md, "Kafka: fetch responses read off the GIL, the
        next fetch asked before the hand-over")."""
        if not getattr(response, "viewed", False):
            return None
        brought: dict[str, int] = {}
        following = dict(start)
        for topic, partitions in response.topics:
            for partition, code, _, _, _, records in partitions:
                if code != 0 or partition != 0 or topic not in start:
                    return None
                after = position_after(records, start[topic])
                if after is None:
                    return None
                following[topic] = after
                brought[topic] = len(records)
        if sum(brought.values()) < AHEAD_FROM:
            return None
        now = self._due(node)
        if now.keys() != due.keys() or any(set(now[t]) != set(due[t]) for t in due):
            return None  # members came or went (or paused): the next request is built anew
        next_sizes = {}
        for topic, wants in due.items():
            room = self.share - max(w.member.buffered() for w in wants) - brought.get(topic, 0)
            if room < self.share // 4:
                return None
            next_sizes[topic] = room
        sent = asyncio.ensure_future(self._send(node, session.request(following, next_sizes,
                                                                      self.budget)))
        return Ahead(sent, due, following, next_sizes)

    def _deliver(self, node: int, due: dict[str, list[Want]], start: dict[str, int],
                 response) -> tuple[bool, int]:
        """Hand each member its records; False if a partition had an error,
        and the bytes of the records handed over."""
        ok = True
        handed = 0
        if not isinstance(response, FetchResponse):
            raise KafkaFetchError(f"the broker answers Fetch v{response.API_VERSION}; "
                                  "dnpfs reads v11 (Kafka 2.3 and later)")
        for topic, partitions in response.topics:
            for partition, code, highwater, stable, aborted, records in partitions:
                wants = [w for w in due.get(topic, ()) if self._wants.get(w.member) is w]
                if partition != 0 or not wants:
                    continue  # removed meanwhile (its cursor may have moved on)
                if code == OFFSET_OUT_OF_RANGE:
                    for want in wants:
                        self._reset(want)
                    continue
                if code != 0:
                    log.debug("fetching %s from broker %d: error %d", topic, node, code)
                    self.catalog.stale_leaders()
                    ok = False
                    continue
                self.highwater[topic] = stable if stable >= 0 else highwater
                fetched, next_offset = read_records(records, start[topic], aborted,
                                                   self.check_crcs, response.viewed)
                for lost in fetched:
                    if isinstance(lost, Unreadable):
                        self._report(topic, lost)
                for want in wants:
                    if start[topic] > want.position:
                        continue  # it shed records meanwhile: fetched again from there
                    if next_offset > want.position:
                        mine = [r for r in fetched if r.offset >= want.position]
                        want.position = next_offset
                        want.member.fetched(mine)
                        if mine:
                            handed += len(records)
                        # The first partition of a response brings a whole
                        # batch (up to 1 MB) whatever its size asked for:
                        # keep the share, fetch the rest again later.
                        dropped = want.member.shed(self.share)
                        if dropped is not None:
                            want.position = min(want.position, dropped)
        return ok, handed

    def _report(self, topic: str, lost: Unreadable) -> None:
        """Log an unreadable batch once, not for each reader group of the pipe
        that meets it, nor at every fetch that starts over before it."""
        if self._unreadable.get(topic, -1) >= lost.offset:
            return
        self._unreadable[topic] = lost.offset
        log.error("%s partition 0: the records at offsets %d-%d cannot be read (%s); "
                  "readers get EIO there once and go on after them",
                  topic, lost.first, lost.offset, lost.reason)

    def _reset(self, want: Want) -> None:
        """The position is outside the log (retention deleted it, or the topic
        was made again): start at the log's first record, as aiokafka's
        auto_offset_reset="earliest" did."""
        async def reset() -> None:
            try:
                start = await self.catalog.list_offset(want.member.name, EARLIEST)
            except Exception as e:  # noqa: BLE001 - try again with the next request
                log.info("%s: reading the log start: %s", want.member.group_id, e)
                await asyncio.sleep(RETRY_WAIT)
            else:
                log.info("%s: offset %d is gone from the log; reading from %d",
                         want.member.group_id, want.position, start)
                want.position = start
            want.resetting = False
            self.wake()

        if not want.resetting:
            want.resetting = True
            task = asyncio.create_task(reset(), name=f"reset {want.member.group_id}")
            self._resets.add(task)  # the loop keeps only weak references
            task.add_done_callback(self._resets.discard)


class Session:
    """One loop's incremental fetch session with its broker (KIP-227).

    The broker remembers the partitions of the session and where each was
    last asked for; a request names only what changed since (a moved
    position, a partition added, partitions forgotten), and a response only
    partitions with records, an error or a new high watermark.  Epoch 0 asks
    in full and opens a session (closing the one of that id); a broker that
    has no room for it (session id 0 in the answer) or does not know Fetch
    v7 is simply asked in full each time."""

    __slots__ = ("id", "epoch", "held")

    def __init__(self) -> None:
        self.id = 0
        self.restart()

    def restart(self) -> None:
        self.epoch = 0
        self.held: dict[str, tuple[int, int]] = {}  # topic -> (position, size) the broker holds

    def request(self, start: dict[str, int], sizes: dict[str, int] | None = None,
                budget: int = RESPONSE_BYTES) -> SessionFetchRequest:
        """*sizes*: the most bytes wanted of each topic (PARTITION_BYTES if
        not given); *budget*: of all together."""
        wanted = _wanted(start, sizes)
        if self.epoch == 0:
            changed, forgotten = wanted, []
        else:
            # The broker keeps each partition's size with its position: a
            # changed share is sent like a moved position.
            changed = {t: w for t, w in wanted.items() if self.held.get(t) != w}
            forgotten = [t for t in self.held if t not in start]
        return fetch_request(self.id, self.epoch, changed, forgotten,
                             response_bytes=min(RESPONSE_BYTES, budget))

    def closing(self) -> SessionFetchRequest:
        """The last request: epoch -1 closes the session and fetches nothing."""
        return fetch_request(self.id, -1, {}, [], max_wait_ms=0)

    def answered(self, response, start: dict[str, int],
                 sizes: dict[str, int] | None = None) -> bool:
        """Take in a response's session fields; False if the session is gone
        (the broker restarted or evicted it) and the response holds nothing."""
        error = getattr(response, "error_code", 0)
        if error in (FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH):
            log.info("fetch session %d: error %d; opening another", self.id, error)
            self.restart()
            return False
        if error:
            raise KafkaFetchError(f"fetch error {error}")
        self.id = getattr(response, "session_id", 0)
        if self.id == 0:
            self.restart()  # no session: the next request is a full one again
        else:
            self.epoch = self.epoch + 1 if self.epoch < 0x7FFFFFFF else 1
            self.held = _wanted(start, sizes)
        return True


def _wanted(start: dict[str, int], sizes: dict[str, int] | None) -> dict[str, tuple[int, int]]:
    """topic -> (offset, most bytes wanted of it)."""
    sizes = sizes or {}
    return {t: (o, min(PARTITION_BYTES, sizes.get(t, PARTITION_BYTES))) for t, o in start.items()}


class KafkaFetchError(Exception):
    """A fetch response's top-level error other than the session's own."""


def fetch_request(session_id: int, epoch: int, start: dict, forgotten: list[str],
                  max_wait_ms: int = FETCH_WAIT_MS,
                  response_bytes: int = RESPONSE_BYTES) -> SessionFetchRequest:
    """A read_committed Fetch request in a session; *start*: topic -> offset,
    or (offset, most bytes wanted of it)."""
    parts = [(topic, want if isinstance(want, tuple) else (want, PARTITION_BYTES))
             for topic, want in start.items()]
    return SessionFetchRequest(
        session_id, epoch, forgotten, decode_fetch_v11,
        max_wait_ms, 1, response_bytes, READ_COMMITTED,
        [(topic, [(0, offset, size)]) for topic, (offset, size) in parts])

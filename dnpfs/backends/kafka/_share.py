"""Work queues on Kafka: a pipe's default group as a share group (KIP-932).

A consumer group hands a one-partition topic to one member at a time, so
workers on three mounts took turns (``_member``).  A share group hands each
record to one member of many: the broker *acquires* a record for a member,
and the member acknowledges it ACCEPT (done), RELEASE (deliver it again,
to anyone) or REJECT (never again); the broker counts deliveries and
archives a record released ``group.share.delivery.count.limit`` times (5
by default, as ``MAX_DELIVERIES``).

``ShareReader`` is this mount's member of pipe NAME's share group
``dnpfs-share.<topic>`` (a consumer group of that name could not also be a
share group, so not ``dnpfs.<topic>``).  It acquires a record only for a
reader handle that asks and has nothing (``take``), one at a time (ShareFetch
v2 in record-limit mode: a record never waits on one mount while another
mount's worker is idle) unless the handle streams: then as many as its
``_window.Window`` says, the first for the read that asked and the rest
ahead for that handle alone (in order), renewed as held records are and
released as soon as the handle is gone.  A handle's records:

- ``settle``: the handle's job is done (its next read or a normal close): ACCEPT;
  records acquired ahead for it go back (RELEASE) unless it reads again
  within ``LEAVE_GRACE`` (the store hears the same ``settle`` at a read and
  at a close);
- ``give_back``: its process was killed: RELEASE, or, once the record went
  out ``MAX_DELIVERIES`` times, REJECT and keep a note of it (``aside``);
- markers carry no bytes: a BEGIN is accepted at once, an END decides EOF
  (``_ledger.Ledger`` knows which sessions were open there) and is accepted.

The member's requests run on the backend's asyncio loop.  A handle's reads
do not wait for it while records are here for them: ``try_take`` and
``settle`` run in the trio thread (``KafkaBackend.consume_held``), as a
consumer group's buffered reads do (``_shared.MemberState``), and only a
read that finds nothing here (or an END, which the ledger decides) goes
through ``Bridge.call`` to ``take``.  The lock rules:

- ``ShareReader.lock`` guards the records and the handles' state (``_ready``,
  ``_held``, ``_ahead``, ``_windows``, ``_leaving``, ``_wants``,
  ``_refills``, ``_refilled``, ``_acks`` and the hand-over flags): either
  thread changes or decides on them only under it, never across an await.
- The trio thread touches no asyncio object.  What its reads leave for the
  loop (ACCEPTs of records moved past, a handle's leave, the next window's
  fetch) is queued under the lock and handed over by ``_tick``, which the
  loop runs once per ``TICK`` while the trio side has news for it; a
  refill or a RELEASE asks for a tick at once (``_kick_locked``).  So a
  ``cat`` costs the loop a wake-up per tick and per window, not per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable

from aiokafka.protocol.admin import ApiVersionRequest

from ...model import Cursor, Held, Kind, StoredRecord
from ..base import MAX_DELIVERIES, Fetched
from . import wire
from ._aiokafka import share_requests as rq
from ._ledger import Ledger
from ._own_connection import OwnConnection
from ._records import Unreadable, read_records
from ._window import Window

log = logging.getLogger(__name__)

# Until the coordinator assigns the partition, heartbeat again after this,
# doubling up to JOIN_POLL: the assignment comes in the heartbeat after the
# broker initialized the share partition, tens of ms after the first one.
JOIN_FIRST_POLL = 0.01
JOIN_POLL = 0.1
JOIN_TIMEOUT = 10.0  # a non-blocking read waits this long at most for the mount to join
# A member in the group with no partition this long says why once: the broker
# is still initializing the group's state; one that restarted mid-way retries
# only after group.share.initialize.retry.interval.ms (docs/kafka.md).
ASSIGN_SLOW = 10.0
FETCH_WAIT_MS = 500  # a ShareFetch waits this long for a record to come
# ... for a non-blocking read: the broker answers as soon as a record can be
# acquired, but a share partition's first fetch after a while may find it
# still loading its state: a fetch that does not wait at all finds nothing.
EAGER_WAIT_MS = 200
FETCH_BYTES = 8 << 20
# An ACCEPT waits this long for a request to ride on: a worker that finished
# a job asks for the next one at once, and the ShareFetch for it carries the
# acknowledgement (docs/decisions.md, "Work queues on Kafka").
ACK_DELAY = 0.02
TICK = ACK_DELAY  # the loop looks at what the trio side left it this often (module doc)
RENEW_EVERY = 10.0  # a held record's lock (30 s by default) is renewed this often
# (group.share.record.lock.duration.ms; a job that outlasted it would go to
# a second worker while the first still works on it)
STOP_TIMEOUT = 3.0
# A record acquired for poll() (``peek``) that no read took this long goes
# back, so a poller that never reads holds nothing for long.
READY_IDLE = 5.0
ASIDE_KEPT = 1000
ASSIGNMENT_INTERVAL = "share.assignment.interval.ms"  # a group setting since Kafka 4.4
# A read settles the handle's last record and takes the next at once (two
# calls a loop tick apart); a close settles it alone: a handle that took
# nothing this long after its settle has gone, and its records ahead go back.
LEAVE_GRACE = 0.1
# A give-back waits this long at most for its RELEASE to reach the broker
# (behind a ShareFetch already waiting there: FETCH_WAIT_MS).
GIVEN_BACK_WAIT = 2.0

# Error codes
COORDINATOR_GONE = {14, 15, 16}  # load in progress, not available, not coordinator
FENCED = {25, 110}  # unknown member id, fenced member epoch
SESSION_GONE = {122, 123}  # share session not found, invalid share session epoch
NOT_LEADER = {6, 3, 100}  # not leader or follower, unknown topic, unknown topic id


def share_group_id(topic: str) -> str:
    return f"dnpfs-share.{topic}"


class Acquired:
    """A record acquired for this mount, and which handle has it."""

    __slots__ = ("record", "deliveries", "holder", "since")

    def __init__(self, record: StoredRecord, deliveries: int) -> None:
        self.record = record
        self.deliveries = deliveries
        self.holder: object | None = None
        self.since = time.monotonic()


class ShareReader:
    def __init__(self, cluster, name: str, notify: Callable[[str], None],
                 aside: deque[Held]) -> None:
        self.cluster = cluster
        self.name = name
        self.topic = cluster.topic(name)
        self.group_id = share_group_id(self.topic)
        self.notify = notify
        self.member_id = str(uuid.uuid4())
        self.epoch = 0
        self.topic_id: uuid.UUID | None = None
        self.interval = 5.0
        self.session_epoch = 0
        self.coordinator: int | None = None
        self.closing = False
        self.ledger = Ledger(cluster, name)
        self._wants: dict[object, None] = {}  # handles waiting for a record, oldest first
        self._peek = False  # poll() asked whether a record is there
        self._eager = 0  # non-blocking reads waiting for one ShareFetch round
        self._round = asyncio.Event()  # set (and replaced) when a ShareFetch round ends
        self._joined = asyncio.Event()
        # Under ``lock`` (module doc), from here to ``_ticking``.
        self.lock = threading.RLock()
        self._ready: deque[Acquired] = deque()  # acquired, not handed out yet
        # Handed out, job not done: every record a handle took since it last
        # settled (more than one when a read took several, or when two reads
        # of one open file, threads or forked processes, ran at once).
        self._held: dict[object, list[Acquired]] = {}
        self._ahead: dict[object, deque[Acquired]] = {}  # acquired for a handle's next reads
        self._windows: dict[object, Window] = {}
        self._leaving: dict[object, float] = {}  # settled (time.monotonic()), not read since
        # Handles that stream and have less than a window here: their next
        # window is fetched while they read (``_refill``); ``_refilled`` until
        # that ShareFetch answered.
        self._refills: set[object] = set()
        self._refilled: set[object] = set()
        self._acks: list[tuple[int, int]] = []  # (offset, type) not sent yet
        self._urgent = False  # the trio side asked for a fetch or sent a RELEASE: tick now
        self._dirty = False  # the trio side changed something since the last tick
        self._ticking = False  # a tick is due (its timer is set): ask only if urgent
        self._tick_queued = False  # ... or about to run: do not ask again
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tick_timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self.aside = aside  # rejected by this mount, oldest first (``ShareReaders.aside``)
        self.error: str | None = None
        self._lost_until = -1  # the last offset of the last unreadable batch met
        self._ack_timer: asyncio.TimerHandle | None = None
        # ShareFetch (which waits at the broker) and ShareAcknowledge go on a
        # connection of the member's own, not the cluster's (_own_connection).
        self.link = OwnConnection(cluster)

    # -- life ------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name=f"beat {self.group_id}")
        self._task = asyncio.create_task(self._fetch_loop(), name=f"share {self.group_id}")

    async def close(self) -> None:
        """Give back what no handle holds, send the last acknowledgements, leave."""
        with self.lock:
            if self.closing:
                return
            self.closing = True
            # (what handles still open when the mount stops hold: their jobs
            # did not finish)
            for acquired in itertools.chain(self._ready, *self._held.values(),
                                            *self._ahead.values()):
                self._acks.append((acquired.record.offset, rq.RELEASE))
            self._ready.clear()
            self._held.clear()
            self._ahead.clear()
            self._leaving.clear()
        for timer in (self._ack_timer, self._tick_timer):
            if timer is not None:
                timer.cancel()
        self._wake.set()
        for task in (self._task, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                if self.topic_id is not None and self.epoch > 0:
                    await self._send_acks(final=True)
                if self.coordinator is not None:
                    await self.cluster.client.send(self.coordinator, rq.ShareGroupHeartbeatRequest(
                        self.group_id, self.member_id, -1, None))
        except Exception as e:  # noqa: BLE001 - leaving is best effort: the broker times us out
            log.info("%s: leaving the share group: %s", self.group_id, e)
        finally:
            self.link.close()

    # -- a handle's reads --------------------------------------------------------
    def try_take(self, holder: object, max_bytes: int, decide):
        """From the trio thread: ``take`` when the handle's next record is
        here, acquired ahead for it or for the mount, and is no END (the
        ledger, on the loop, decides those).  Returns None (nothing decided:
        ``take`` on the loop) or ``(result,)``."""
        with self.lock:
            if self.closing:
                return None
            head = next((a for a in self._queue(holder) if a.record.kind is not Kind.BEGIN), None)
            if head is None or head.record.kind is Kind.END:
                return None
            self._asked(holder)
            result = self._decide(holder, self._pick(holder, max_bytes), decide)
            kick = self._kick_locked()
        if kick:
            self._hand_over()
        return (result,)

    def take(self, holder: object, max_bytes: int, decide):
        """``Holds.consume_held`` for one handle, on the loop: the next records
        acquired for it, through *decide*; or *decide* of nothing (the handle
        waits for ``notify``)."""
        with self.lock:
            self._asked(holder)
            picked = self._pick(holder, max_bytes)
            if picked is None:
                queue = self._queue(holder)
                # An END the ledger has not reached: its notify follows.  A ShareFetch
                # now would wait FETCH_WAIT_MS for nothing, and the ledger's Fetch
                # behind it on the connection (the broker answers a connection's
                # requests one at a time) with it.
                if not (queue and queue[0].record.kind is Kind.END):
                    self._wants[holder] = None
                    self._wake.set()
                return decide(Fetched(Cursor(), ()))[1]
            return self._decide(holder, picked, decide)

    async def take_now(self, holder: object, max_bytes: int, decide):
        """``take`` for a non-blocking read, which must see what is stored:
        until a record with bytes is acquired here, ShareFetch rounds (which
        wait ``EAGER_WAIT_MS`` at most) ask for one first."""
        with self.lock:
            self._asked(holder)
            has_data = self._has_data(holder)
        if not has_data:
            self._eager += 1
            try:
                async with asyncio.timeout(JOIN_TIMEOUT):
                    await self._joined.wait()
                    empty = 0
                    # Two rounds that found nothing: one may have been under way
                    # before the want.  Markers do not count.
                    while empty < 2:
                        with self.lock:
                            if self._has_data(holder):
                                break
                            self._wants[holder] = None
                            before = len(self._ready)
                        self._wake.set()
                        round_ = self._round
                        await round_.wait()
                        empty += len(self._ready) == before
                    while True:
                        with self.lock:
                            queue = self._queue(holder)
                            if not (queue and queue[0].record.kind is Kind.END and
                                    self.ledger.open_at(queue[0].record.offset,
                                                        peek=True) is None):
                                break
                            self.ledger.want(queue[0].record.offset, self.notify)
                        await asyncio.sleep(0.02)  # the ledger reads the markers before it
            except TimeoutError:
                pass
            finally:
                self._eager -= 1
                with self.lock:
                    self._wants.pop(holder, None)  # it does not wait: acquire nothing for it
        with self.lock:
            picked = self._pick(holder, max_bytes)
            if picked is None:
                return decide(Fetched(Cursor(), ()))[1]
            return self._decide(holder, picked, decide)

    def _has_data(self, holder: object) -> bool:
        return any(a.record.kind in (Kind.DATA, Kind.UNREADABLE) for a in self._queue(holder))

    def _queue(self, holder: object) -> deque[Acquired]:
        """(Under the lock) Where the handle's next record comes from: those
        acquired ahead for it, or, once they are gone, the mount's, or, when
        the mount has none, some that another handle has ahead (``_share_ahead``).
        BEGIN markers at the head of its own are accepted here (as
        ``_pick_from`` does): records ahead that were only markers are gone,
        and the read takes the mount's (it found nothing ahead and waited
        with no fetch due, since the mount had a record for it:
        docs/decisions.md, "Share groups after a broker restart")."""
        ahead = self._ahead.get(holder)
        if ahead is None:
            return self._share_ahead(holder)
        while ahead and ahead[0].record.kind is Kind.BEGIN:
            self._ack(ahead.popleft().record.offset, rq.ACCEPT)
        if ahead:
            return ahead
        del self._ahead[holder]
        return self._share_ahead(holder)

    def _share_ahead(self, holder: object) -> deque[Acquired]:
        """(Under the lock) The mount's records; if it has none with bytes,
        the later half of the data another handle here has acquired ahead
        and not read yet, as this handle's own.  Records ahead are only
        fetched early, not delivered: left with the other handle, a reader
        with nothing of its own would wait for a ShareFetch that finds
        nothing (they are acquired) while poll() says there are bytes; a
        non-blocking reader got EAGAIN only after two rounds of EAGER_WAIT_MS
        each (two readers on one mount took 4 s to over 10 s for 200 short
        lines).
        The later half, so each handle still reads in offset order."""
        if any(a.record.kind is not Kind.BEGIN for a in self._ready):
            return self._ready
        others = [h for h in self._ahead if h is not holder]
        if not others:
            return self._ready
        theirs = self._ahead[max(others, key=lambda h: len(self._ahead[h]))]
        # only data from the end: a marker stays with the reader it was fetched for
        n = sum(1 for _ in itertools.takewhile(lambda a: a.record.kind is Kind.DATA,
                                               reversed(theirs)))
        n = min(n, (len(theirs) + 1) // 2)
        if n == 0:
            return self._ready
        mine = self._ahead[holder] = deque()
        for _ in range(n):
            acquired = theirs.pop()
            acquired.holder = holder
            mine.appendleft(acquired)
        return mine

    def _asked(self, holder: object) -> None:
        self._leaving.pop(holder, None)
        self._windows.setdefault(holder, Window()).asked(time.monotonic())

    def _pick(self, holder: object, max_bytes: int):
        queue = self._queue(holder)
        # Records acquired ahead for the handle are its own: a read takes as
        # many of them as it has room for.  The mount's go one a read.
        picked = self._pick_from(queue, max_bytes if queue is not self._ready else 0)
        return None if picked is None else (*picked, queue)

    def _pick_from(self, queue: deque[Acquired],
                   max_bytes: int = 0) -> tuple[list[Acquired], Fetched] | None:
        """The next acquired records for a read, as ``delivery.take`` reads
        them: a record with bytes, and the data records after it up to
        *max_bytes* in all; or an END marker (the sessions open at it from
        the ledger), with the record after it if it is here, so that an END
        that is no EOF for the reader does not end its read empty.  BEGIN
        markers are accepted on the way (the session's data opens it for
        the reader as well).  None: nothing here yet, or an END the ledger
        has not reached (``notify`` follows)."""
        while queue:
            acquired = queue[0]
            rec = acquired.record
            if rec.kind is Kind.BEGIN:
                queue.popleft()
                self._ack(rec.offset, rq.ACCEPT)
                continue
            if rec.kind is not Kind.END:
                run = [queue.popleft()]
                size = len(rec.data or b"")
                if rec.kind is Kind.DATA:
                    # in offset order only: a record given back elsewhere and
                    # acquired again comes after later ones, and ``delivery.take``
                    # skips a record below its cursor as read
                    while queue and size < max_bytes and queue[0].record.kind is Kind.DATA \
                            and queue[0].record.offset > run[-1].record.offset:
                        run.append(queue.popleft())
                        size += len(run[-1].record.data)
                return run, Fetched(Cursor(rec.offset), [a.record for a in run])
            open_sessions = self.ledger.open_at(rec.offset)
            if open_sessions is None:
                self.ledger.want(rec.offset, self.notify)
                return None
            queue.popleft()
            self._ack(rec.offset, rq.ACCEPT)
            run = [acquired]
            while queue and queue[0].record.kind is Kind.BEGIN and \
                    queue[0].record.offset > rec.offset:
                self._ack(queue.popleft().record.offset, rq.ACCEPT)
            if queue and queue[0].record.kind is Kind.DATA and \
                    queue[0].record.offset > rec.offset:
                run.append(queue.popleft())
            return run, Fetched(Cursor(rec.offset, 0, open_sessions), [a.record for a in run])
        return None

    def _decide(self, holder: object, picked, decide):
        """Run *decide*; the records it consumed are the handle's (until
        ``settle``), markers are done, the rest waits for the next read."""
        run, fetched, queue = picked
        cursor, result = decide(fetched)
        now = time.monotonic()
        window = self._windows.setdefault(holder, Window())
        took: list[Acquired] = []  # last first
        for acquired in reversed(run):
            rec = acquired.record
            if rec.kind is Kind.END:
                continue
            if rec.kind is Kind.UNREADABLE:
                self._ack(rec.offset, rq.ACCEPT)  # EIO for this read, once (docs/kafka.md)
            elif cursor.offset > rec.offset:
                acquired.holder = holder
                acquired.since = now  # renewed from now on
                if not took:  # the last one it took
                    window.given(now, len(rec.data or b""))
                took.append(acquired)
            else:  # not taken (the END before it was this reader's EOF, or no room)
                queue.appendleft(acquired)
        if took:
            self._held.setdefault(holder, []).extend(reversed(took))
            self._wants.pop(holder, None)
            if queue is self._ready:
                self._claim(holder)
            self._refill(holder, window)
        if not self._ahead.get(holder, True):
            del self._ahead[holder]
        if all(a.record.kind is Kind.END for a in run):
            # An END that was no EOF ends the read empty, and its reader waits
            # for a change.  With the next record a marker already here
            # (_pick_from adds only data after an END), nothing would announce
            # one: wake it to read on.  With nothing here, nothing would fetch
            # its next record: ask for it (an EOF's settle takes the ask back).
            if self._queue(holder):
                self.notify(self.name)
            else:
                self._wants[holder] = None
                self._poke()
        return result

    def _refill(self, holder: object, window: Window) -> None:
        """A handle that streams has its next window fetched while it reads
        this one: once less than a window is here for it (ahead for it, or
        the mount's), a ShareFetch that does not wait, one at a time."""
        if window.size <= 1 or holder in self._refilled:
            return
        here = len(self._ahead.get(holder, ())) + \
            sum(a.record.kind is Kind.DATA for a in self._ready)
        if here < window.size:
            self._refilled.add(holder)
            self._refills.add(holder)
            self._poke()

    def _claim(self, holder: object) -> None:
        """The mount's records after the one the handle took, up to its
        window, are the handle's next ones."""
        n = self._windows.setdefault(holder, Window()).size - 1
        if n <= 0 or not self._ready:
            return
        queue = self._ahead.setdefault(holder, deque())
        while self._ready and n > 0:
            acquired = self._ready.popleft()
            acquired.holder = holder
            queue.append(acquired)
            n -= acquired.record.kind in (Kind.DATA, Kind.UNREADABLE)

    def settle(self, holder: object) -> None:
        """The handle's job is done (from the trio thread): ACCEPT what it
        holds; what it holds ahead goes back unless it reads again within
        ``LEAVE_GRACE`` (``_tick``)."""
        with self.lock:
            if self.closing:
                return
            self._wants.pop(holder, None)
            for acquired in self._held.pop(holder, ()):
                self._ack(acquired.record.offset, rq.ACCEPT)
            if holder in self._windows:
                self._leaving.setdefault(holder, time.monotonic())
                self._dirty = True
            kick = self._kick_locked()
        if kick:
            self._hand_over()

    def _leave(self, holder: object) -> None:
        """The handle is gone: what was acquired ahead for it goes back now.
        Each went out once more (acquiring counts a delivery, Kafka 4.4 has
        no release that does not): docs/semantics.md."""
        self._leaving.pop(holder, None)
        self._windows.pop(holder, None)
        self._wants.pop(holder, None)
        self._refills.discard(holder)
        self._refilled.discard(holder)
        for acquired in self._ahead.pop(holder, ()):
            self._ack(acquired.record.offset, rq.RELEASE)
        if not self._windows and not self._peek and not self._eager:
            # the last handle here: what was fetched for its next window goes too
            while self._ready:
                self._ack(self._ready.popleft().record.offset, rq.RELEASE)

    def give_back(self, holder: object) -> None:
        """The handle's process was killed (or it closed part way through its
        record: the whole record goes back, Kafka acknowledges records, not
        bytes)."""
        with self.lock:
            self._leave(holder)
            for acquired in self._held.pop(holder, ()):
                rec = acquired.record
                if acquired.deliveries >= MAX_DELIVERIES:
                    log.warning("%s: record %d went out %d times: set aside (rejected)",
                                self.name, rec.offset, acquired.deliveries)
                    self.aside.append(Held(rec.offset, 0, rec.session, rec.data,
                                           acquired.deliveries))
                    self._ack(rec.offset, rq.REJECT)
                else:
                    self._ack(rec.offset, rq.RELEASE)

    async def sent(self) -> None:
        """Wait (``GIVEN_BACK_WAIT`` at most) until the acknowledgements queued
        now have gone to the broker.  For ``give_back``: a record given back
        is the group's next read on any mount (the store contract,
        dnpfs/backends/base.py), so the RELEASE must be there before the
        caller goes on."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GIVEN_BACK_WAIT):
                while self._acks and self.session_epoch:
                    self._wake.set()
                    await self._round.wait()

    def peek(self) -> bool:
        """For poll(): is a record acquired for this mount?  If not, acquire
        one (``notify`` follows), kept for this mount's next read."""
        with self.lock:
            if any(a.record.kind is not Kind.BEGIN
                   for queue in (self._ready, *self._ahead.values()) for a in queue):
                return True  # bytes, an error, or an END (EOF, unless stale)
            self._peek = True
        self._wake.set()
        return False

    def redelivered(self) -> int:
        with self.lock:
            return sum(a.deliveries > 1 for held in self._held.values() for a in held)

    # -- the trio side's news for the loop (module doc) ---------------------------------
    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _poke(self) -> None:
        """(Under the lock) the fetch loop has work: now, from the loop; at
        once, through a tick, from the trio thread."""
        if self._on_loop():
            self._wake.set()
        else:
            self._urgent = self._dirty = True

    def _kick_locked(self) -> bool:
        """(Trio thread, under the lock) Must the loop be asked for a tick?
        Urgent news asks at once; the rest waits for the tick due anyway."""
        if self._tick_queued:
            return False
        if self._urgent or (self._dirty and not self._ticking):
            self._ticking = self._tick_queued = True
            return True
        return False

    def _hand_over(self) -> None:
        """(Trio thread, outside the lock) Ask the loop for a tick."""
        try:
            self._loop.call_soon_threadsafe(self._tick)
        except RuntimeError:  # the loop closed: the mount is stopping
            pass

    def _tick(self) -> None:
        """(Loop) Take what the trio side left: send its acknowledgements,
        fetch what it asked for, let go of handles that left; come back in
        ``TICK`` while it is busy."""
        with self.lock:
            urgent, dirty = self._urgent, self._dirty
            self._urgent = self._dirty = self._tick_queued = False
            now = time.monotonic()
            for holder in [h for h, t in self._leaving.items() if now - t >= LEAVE_GRACE]:
                self._leave(holder)
            again = dirty or bool(self._leaving)
            self._ticking = again
            acks = bool(self._acks)
        if urgent:
            self._wake.set()
        if acks and self._ack_timer is None:
            self._ack_timer = self._loop.call_later(ACK_DELAY, self._ack_due)
        if again and self._tick_timer is None and not self.closing:
            self._tick_timer = self._loop.call_later(TICK, self._tick_due)

    def _tick_due(self) -> None:
        self._tick_timer = None
        self._tick()

    # -- the broker side --------------------------------------------------------------
    def _ack(self, offset: int, kind: int) -> None:
        """(Under the lock, either thread.)"""
        self._acks.append((offset, kind))
        if not self._on_loop():
            # ACCEPTs wait for the next tick; RELEASE, REJECT: another worker waits
            self._dirty = True
            self._urgent |= kind != rq.ACCEPT
        elif kind == rq.ACCEPT:
            if self._ack_timer is None:
                self._ack_timer = self._loop.call_later(ACK_DELAY, self._ack_due)
        else:  # RELEASE, REJECT: another worker waits for it
            self._wake.set()

    def _ack_due(self) -> None:
        self._ack_timer = None
        if self._acks:
            self._wake.set()

    async def _coordinator(self) -> int:
        if self.coordinator is None:
            self.coordinator = await self.cluster.admin.find_coordinator(self.group_id)
        return self.coordinator

    async def _heartbeat_loop(self) -> None:
        topics: list[str] | None = [self.topic]
        poll = JOIN_FIRST_POLL
        unassigned_since: float | None = None  # in the group, no partition yet, since then
        slow = False
        while True:
            try:
                node = await self._coordinator()
                response = await self.cluster.client.send(node, rq.ShareGroupHeartbeatRequest(
                    self.group_id, self.member_id, self.epoch, topics))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the coordinator moved or is away: look again
                log.info("%s: heartbeat: %s", self.group_id, e)
                self.coordinator = None
                await asyncio.sleep(1)
                continue
            code = response.error_code
            if code in COORDINATOR_GONE:
                self.coordinator = None
                await asyncio.sleep(0.2)
                continue
            if code in FENCED:
                log.info("%s: fenced (%d): joining again", self.group_id, code)
                self.epoch, topics, self.topic_id = 0, [self.topic], None
                continue
            if code:
                self.error = f"share group heartbeat: error {code} {response.error_message or ''}"
                log.warning("%s: %s", self.group_id, self.error)
                await asyncio.sleep(2)
                continue
            self.error = None
            topics = None
            self.epoch = response.member_epoch
            self.interval = max(response.heartbeat_interval_ms, 100) / 1000
            if response.assignment is not None:
                parts = response.assignment[0]
                new_id = parts[0][0] if parts else None
                if new_id != self.topic_id:
                    self.topic_id = new_id
                    self._wake.set()
                if new_id is not None:
                    self._joined.set()
                else:
                    self._joined.clear()
            if self.topic_id is None:
                now = time.monotonic()
                if unassigned_since is None:
                    unassigned_since, slow = now, False
                elif not slow and now - unassigned_since >= ASSIGN_SLOW:
                    slow = True
                    log.warning("%s: in the share group for %.0f s and no partition assigned yet:"
                                " the broker has not initialized the group's state (after a"
                                " broker restart it tries again group.share.initialize.retry"
                                ".interval.ms, 30 s by default, after it began); reads wait",
                                self.group_id, now - unassigned_since)
                await asyncio.sleep(poll)
                poll = min(poll * 2, JOIN_POLL)
            else:
                if unassigned_since is not None and slow:
                    log.warning("%s: partition assigned after %.0f s", self.group_id,
                                time.monotonic() - unassigned_since)
                unassigned_since = None
                poll = JOIN_FIRST_POLL
                await asyncio.sleep(self.interval)

    async def _fetch_loop(self) -> None:
        failing = ""  # the error the last round met
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RENEW_EVERY / 2):
                    await self._wake.wait()
            self._wake.clear()
            if self.topic_id is None:
                continue  # the heartbeat wakes us once the partition is assigned
            try:
                await self._renew()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - next round
                log.info("%s: renewing acquisition locks: %s", self.group_id, e)
            with self.lock:
                want = self._wanted()
            try:
                if want:
                    await self._fetch(want)
                elif self._acks:
                    await self._send_acks()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the broker is away: try again shortly
                if str(e) != failing:  # once per cause, not twice a second while it lasts
                    failing = str(e)
                    log.info("%s: share fetch: %s", self.group_id, e)
                self.session_epoch = 0
                self._end_round()
                await asyncio.sleep(0.5)
                self._wake.set()
                continue
            if failing:
                log.info("%s: share fetch works again", self.group_id)
                failing = ""
            self._end_round()
            with self.lock:
                want = self._wanted()
            if want:
                self._wake.set()
            elif self._acks and self._ack_timer is None:
                self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._ack_due)

    def _wanted(self) -> int:
        """(Under the lock) How many records to acquire: a window per waiting handle (and one
        for a poller), less those here; markers here serve no reader and do
        not count."""
        have = sum(a.record.kind in (Kind.DATA, Kind.UNREADABLE) for a in self._ready)
        windows = sum(w.size if (w := self._windows.get(h)) else 1
                      for h in self._wants.keys() | self._refills)
        return max(0, windows + self._peek - have)

    def _end_round(self) -> None:
        self._round.set()
        self._round = asyncio.Event()

    def _leader(self) -> int:
        leader = self.cluster.catalog.leader(self.topic)
        if leader < 0:
            self.cluster.catalog.stale_leaders()
            raise RuntimeError("no leader known")
        return leader

    def _next_session_epoch(self) -> int:
        epoch = self.session_epoch
        self.session_epoch = 1 if epoch >= 2**31 - 1 else epoch + 1
        return epoch

    async def _fetch(self, want: int) -> None:
        with self.lock:
            acks, self._acks = self._acks, []
            refills, self._refills = self._refills, set()
        try:
            await self._fetch_some(want, acks)
        finally:
            with self.lock:
                self._refilled -= refills

    async def _fetch_some(self, want: int, acks: list[tuple[int, int]]) -> None:
        # A refill alone does not wait: the handle has records to read.  A
        # waiting handle's fetch waits the whole FETCH_WAIT_MS: the member has a
        # connection of its own (_own_connection), so its long poll holds up no
        # other pipe.  (It was FETCH_WAIT_MS over the mount's share readers,
        # from when they shared one connection: many idle readers then polled
        # the broker all the time; docs/decisions.md, "Share groups by default".)
        wait = EAGER_WAIT_MS if self._eager else \
            FETCH_WAIT_MS if self._wants or self._peek else 0
        if acks and self.session_epoch == 0:
            # A ShareFetch that opens a share session may carry no
            # acknowledgements (the broker refuses the whole request,
            # INVALID_REQUEST), and these are moot: they name records of the
            # lost session, which the broker released (a broker restart, an
            # evicted session) and delivers again.
            log.info("%s: %d acknowledgements dropped with their share session", self.name,
                     len(acks))
            acks = []
        request = rq.ShareFetchRequest(self.group_id, self.member_id, self._next_session_epoch(),
                                       self.topic_id, acks, want, wait, FETCH_BYTES)
        try:
            response = await self.link.send(self._leader(), request)
        except BaseException:
            self._put_back_unsent(request, acks)
            raise
        if response.error_code in SESSION_GONE:
            self.session_epoch = 0
            self._put_back_acks(acks)
            return
        if response.error_code:
            raise RuntimeError(f"ShareFetch error {response.error_code}: {response.error_message}")
        got = 0
        for _, partitions, _ in response.responses:
            for part in partitions:
                _, code, message, ack_code, ack_message, _, raw, acquired_ranges, _ = part
                if ack_code:
                    log.info("%s: acknowledgement refused (%d): %s", self.name, ack_code,
                             ack_message)
                if code in NOT_LEADER:
                    self.cluster.catalog.stale_leaders()
                    self.session_epoch = 0
                    continue
                if code:
                    raise RuntimeError(f"ShareFetch error {code}: {message}")
                with self.lock:
                    got += self._acquired(raw, acquired_ranges)
        if got:
            self._peek = False
            self.notify(self.name)

    def _put_back_acks(self, acks: list[tuple[int, int]]) -> None:
        with self.lock:
            self._acks[:0] = acks

    def _put_back_unsent(self, request, acks: list[tuple[int, int]]) -> None:
        """A request that carried *acks* failed or was cancelled (``close``
        cancels the fetch loop mid-request).  Once written, the broker may
        apply its acknowledgements all the same: sent again, they would name
        records no longer acquired, and the broker refuses a partition's
        acknowledgements whole (error 121), the new ones with the old: an
        ACCEPT lost that way hands the record (an END: a second EOF) to
        another mount when this member leaves.  So only acknowledgements that
        never reached the socket go back; those that did were applied, or
        their session is lost and the broker delivers the records again."""
        if not self.link.written(request):
            self._put_back_acks(acks)

    def _acquired(self, raw: bytes | None, ranges) -> int:
        """(Under the lock.)"""
        if not ranges:
            return 0
        counts = {}
        for first, last, count, _ in ranges:
            for offset in range(first, last + 1):
                counts[offset] = count
        records, _ = read_records(memoryview(raw or b""), min(counts))
        n = 0
        for r in records:
            if isinstance(r, Unreadable):
                # One UNREADABLE (EIO for one read) in place of the batch, also
                # when its records are acquired one at a time: the others are done.
                offsets = sorted(o for o in counts if r.first <= o <= r.offset)
                if not offsets:
                    continue
                if r.offset > self._lost_until:
                    self._lost_until = r.offset
                    log.error("%s partition 0: the records at offsets %d-%d cannot be read (%s);"
                              " readers get EIO there once and go on after them", self.topic,
                              r.first, r.offset, r.reason)
                    rec = StoredRecord(offsets[0], Kind.UNREADABLE, None)
                    offsets = offsets[1:]
                else:
                    rec = None
                for o in offsets:
                    self._acks.append((o, rq.ACCEPT))
                    del counts[o]
                if rec is None:
                    continue
            elif r.offset in counts:
                rec = wire.decode_record(r.offset, r.value, r.headers)
            else:
                continue
            self._ready.append(Acquired(rec, counts.pop(rec.offset)))
            if rec.kind is Kind.END:  # the ledger reads on while the reader gets there
                self.ledger.want(rec.offset, self.notify)
            n += 1
        for offset in counts:  # acquired, but no record there (compaction, a gap)
            self._acks.append((offset, rq.ACCEPT))
        return n

    async def _renew(self) -> None:
        """Extend the locks of records held longer than ``RENEW_EVERY``."""
        now = time.monotonic()
        with self.lock:
            while self._ready and not self._wants and now - self._ready[0].since >= READY_IDLE:
                self._ack(self._ready.popleft().record.offset, rq.RELEASE)
            old = [a for a in itertools.chain(*self._held.values(), *self._ahead.values())
                   if now - a.since >= RENEW_EVERY]
            if not old or self.session_epoch == 0:
                return
            for a in old:
                a.since = now
        request = rq.ShareAcknowledgeRequest(self.group_id, self.member_id,
                                             self._next_session_epoch(), self.topic_id,
                                             [(a.record.offset, rq.RENEW) for a in old],
                                             renew=True)
        response = await self.link.send(self._leader(), request)
        if response.error_code in SESSION_GONE:
            self.session_epoch = 0
        elif response.error_code:
            log.info("%s: renewing: error %d %s", self.name, response.error_code,
                     response.error_message)

    async def _send_acks(self, final: bool = False) -> None:
        with self.lock:
            acks, self._acks = self._acks, []
        if not acks:
            return
        if self.session_epoch == 0:
            # No share session (it was lost): the broker released what the old
            # one held, or will when its locks expire; these are moot.
            log.info("%s: %d acknowledgements dropped with their share session", self.name,
                     len(acks))
            return
        epoch = -1 if final else self._next_session_epoch()
        request = rq.ShareAcknowledgeRequest(self.group_id, self.member_id, epoch,
                                             self.topic_id, acks)
        try:
            response = await self.link.send(self._leader(), request)
        except BaseException:
            if not final:
                self._put_back_unsent(request, acks)
            raise
        if response.error_code in SESSION_GONE and not final:
            self.session_epoch = 0
            self._put_back_acks(acks)
        elif response.error_code:
            log.info("%s: acknowledgement: error %d %s", self.name, response.error_code,
                     response.error_message)
        else:
            for _, partitions, *_ in response.responses:
                for _, code, message, *_ in partitions:
                    if code:
                        log.info("%s: acknowledgement refused (%d): %s", self.name, code,
                                 message)


class ShareReaders:
    """This mount's share readers, one per pipe whose default group has a
    reader here (``attach``/``detach``, from the backend).  ``readers``
    changes on the loop only (the trio thread reads single entries);
    ``_holders``, which reader each handle last read from, under ``_lock``."""

    def __init__(self, cluster, notify: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.notify = notify
        self.readers: dict[str, ShareReader] = {}
        # Records this mount set aside, per pipe, kept after its readers
        # close: the broker archives them and lists them nowhere.
        self.aside: dict[str, deque[Held]] = {}
        self._holders: dict[object, ShareReader] = {}
        self._lock = threading.Lock()
        self._configured: set[str] = set()

    async def supported(self) -> bool:
        """Does the broker serve share groups as ``_aiokafka.share_requests`` speaks them?"""
        node = self.cluster.client.get_random_node()
        response = await self.cluster.client.send(node, ApiVersionRequest())
        return rq.supported({key: (low, high) for key, low, high, *_ in response.api_versions})

    async def attach(self, name: str) -> int:
        horizon = await self.cluster.catalog.end_offset(name)
        topic = self.cluster.topic(name)
        if topic not in self._configured:
            # A share group starts at the log's end and reads uncommitted
            # transactions unless told otherwise: a pipe's readers get what was
            # written before they came, and only what was committed, as on
            # every other path.
            gid = share_group_id(topic)
            node = self.cluster.client.get_random_node()
            response, _ = await asyncio.gather(
                self.cluster.client.send(node, rq.SetGroupConfig(
                    gid, {"share.auto.offset.reset": "earliest",
                          "share.isolation.level": "read_committed"})),
                self._assign_at_once(node, gid))
            code = response.responses[0][0]
            if code:
                log.warning("%s: cannot make the share group start at the oldest record"
                            " and read committed records only: error %d %s", gid, code,
                            response.responses[0][1])
            self._configured.add(topic)
        if name not in self.readers:
            aside = self.aside.setdefault(name, deque(maxlen=ASIDE_KEPT))
            reader = self.readers[name] = ShareReader(self.cluster, name, self.notify, aside)
            reader.start()
        return horizon

    async def _assign_at_once(self, node: int, gid: str) -> None:
        """Kafka 4.4 computes a share group's assignment (on a background
        thread) at most once ``share.assignment.interval.ms``, 1 s by
        default (``group.share.assignment.interval.ms``): a new member got
        its partition, and a reader its first record, ~1 s after the join
        (docs/decisions.md).  Asked alone: a broker without the setting
        refuses the whole request, and reads as well, a second later."""
        response = await self.cluster.client.send(
            node, rq.SetGroupConfig(gid, {ASSIGNMENT_INTERVAL: "0"}))
        code = response.responses[0][0]
        if code:
            log.info("%s: %s=0 refused (error %d %s): a member waits for its partition"
                     " up to the broker's interval", gid, ASSIGNMENT_INTERVAL, code,
                     response.responses[0][1])

    async def detach(self, name: str) -> None:
        reader = self.readers.pop(name, None)
        if reader is not None:
            with self._lock:
                for holder in [h for h, r in self._holders.items() if r is reader]:
                    del self._holders[holder]
            reader.ledger.close()
            await reader.close()

    async def close(self) -> None:
        for name in list(self.readers):
            await self.detach(name)

    async def take(self, name: str, holder: object, max_bytes: int, decide, blocking: bool):
        reader = self.readers.get(name)
        if reader is None:  # detached by a racing close: join again
            await self.attach(name)
            reader = self.readers[name]
        with self._lock:
            self._holders[holder] = reader
        if blocking:
            return reader.take(holder, max_bytes, decide)
        return await reader.take_now(holder, max_bytes, decide)

    async def sessions(self, name: str) -> frozenset[str]:
        """The writer sessions open in the pipe now (for session leases)."""
        reader = self.readers.get(name)
        if reader is None:
            return frozenset()
        return await reader.ledger.catch_up()

    def try_take(self, name: str, holder: object, max_bytes: int, decide):
        """From the trio thread: ``ShareReader.try_take``, or None."""
        reader = self.readers.get(name)
        if reader is None:
            return None
        done = reader.try_take(holder, max_bytes, decide)
        if done is not None:
            with self._lock:
                self._holders[holder] = reader
        return done

    def settle(self, holder: object) -> None:
        """From the trio thread."""
        with self._lock:
            reader = self._holders.pop(holder, None)
        if reader is not None:
            reader.settle(holder)

    async def give_back(self, holder: object) -> None:
        with self._lock:
            reader = self._holders.pop(holder, None)
        if reader is not None:
            reader.give_back(holder)
            await reader.sent()

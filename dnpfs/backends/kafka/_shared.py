"""Everything the trio thread reads of the asyncio side, and the rule for each.

The Kafka backend lives on its own asyncio loop (``_bridge``), but two kinds
of answers must not wait for a trip there: "does this pipe exist" (every
lookup and read asks) and a read whose records are already buffered (the
common case when reading a backlog).  So the trio thread reads:

- ``MountView``: the pipes that exist and the cluster's health.  Immutable;
  the loop publishes a new one whole (``Shared.publish``), readers take
  whichever is current.  No lock: replacing one attribute is atomic.
- ``MemberState``: one reader group's member on this mount: its cursor,
  whether it holds the partition, its buffer of fetched records.  Changed
  only under its ``lock``, by either thread, never across an await.  The
  trio thread reads it under the lock only; the loop may read one field
  without it (a single attribute read is atomic), never decide on two.
- ``Shared.members``: which members the mount has, changed and read under
  the registry's lock.

Nothing else of the Kafka package is read from the trio thread: no aiokafka
object and no asyncio primitive (an ``asyncio.Event`` is not thread-safe).
What the trio thread sets in motion on the loop (resume fetching, commit)
it queues with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ...model import Cursor, StoredRecord
from ..base import Fetched

MAX_FETCH_RECORDS = 4096  # records handed out by one fetch at most


@dataclass(frozen=True, slots=True)
class MountView:
    topics: frozenset[str] = frozenset()  # pipe names, as of the last metadata read
    health: str = "ok"  # or one line: what is wrong


class MemberState:
    """One member's cursor and buffer.  Every field changes under ``lock``
    (see the module doc); the methods take it themselves, except those named
    ``*_locked``, which expect their caller to hold it."""

    __slots__ = ("lock", "cursor", "held", "closing", "settled", "confirmed_at", "session_s",
                 "buffer", "buffered", "paused", "resume_below", "dirty", "tell_loop")

    def __init__(self, session_s: float) -> None:
        self.lock = threading.Lock()
        self.cursor = Cursor()
        self.held = False  # the partition is ours and ``cursor`` is loaded
        self.closing = False
        self.settled = False  # no rebalance under way
        # When the group last confirmed this member (time.monotonic() of the
        # request it answered): past the session timeout the broker may have
        # given the partition to another mount (see ``confirmed``).
        self.confirmed_at = 0.0
        self.session_s = session_s
        self.buffer: deque[StoredRecord] = deque()
        self.buffered = 0  # bytes in ``buffer``
        self.paused = False  # the buffer reached the member's share: fetch no more
        self.resume_below = 0  # ... until it holds less than this
        self.dirty = False  # the cursor moved and the loop knows (a commit is due)
        # Set once by the member: queues its ``moved`` on the loop (thread-safe).
        self.tell_loop: Callable[[], None] = lambda: None

    # -- either thread -----------------------------------------------------------
    def confirmed(self) -> bool:
        """Still surely the partition's holder?  A member the group has not
        answered for its session timeout may have been expelled, and another
        mount may read on from the last commit: it hands out nothing more
        (at-least-once instead of two mounts serving at once)."""
        return time.monotonic() - self.confirmed_at < self.session_s

    def membership(self) -> str:
        """"reading", "standby" or "joining"."""
        with self.lock:
            if self.held:
                return "reading"
            return "standby" if self.settled and not self.closing else "joining"

    def held_cursor(self) -> Cursor | None:
        """The cursor if this member holds the partition, else None."""
        with self.lock:
            return self.cursor if self.held else None

    def slice_locked(self, max_bytes: int) -> list[StoredRecord]:
        """Buffered records from the cursor on, about *max_bytes*."""
        out: list[StoredRecord] = []
        budget = max_bytes
        at, pos = self.cursor.offset, self.cursor.byte_pos
        for rec in self.buffer:
            if rec.offset < at:
                continue
            out.append(rec)
            budget -= len(rec.data) - (pos if rec.offset == at else 0)
            if budget <= 0 or len(out) >= MAX_FETCH_RECORDS:
                break
        return out

    def trim_locked(self) -> None:
        """Drop buffered records below the cursor."""
        while self.buffer and self.buffer[0].offset < self.cursor.offset:
            self.buffered -= len(self.buffer.popleft().data)

    def clear_locked(self) -> None:
        self.buffer.clear()
        self.buffered = 0
        self.paused = False  # a new assignment starts unpaused

    def drained_locked(self) -> bool:
        """Paused, and the buffer ran low enough to fetch again."""
        return self.paused and self.buffered < self.resume_below

    # -- the trio thread ---------------------------------------------------------
    def try_consume(self, max_bytes: int, decide: Callable, blocking: bool):
        """``GroupMember.consume`` from what is buffered, when nothing is under
        way (no rebalance, no close).  Returns None (nothing changed: consume
        on the loop), or ``((result,), tell)``: *tell* if the loop must learn
        that the cursor moved (``tell_loop``, outside the lock).

        *blocking*: with nothing buffered, decide on no records rather than
        ask the broker what it holds (the member's catch-up, a round trip
        per read at 4 records/s on 200 pipes was a sixth of all requests):
        the reader then waits, and the member wakes it when records come."""
        with self.lock:
            ready = not self.closing and self.held and self.settled and self.confirmed()
            records = self.slice_locked(max_bytes) if ready else []
            if not records:
                if not blocking or self.paused:
                    return None  # (paused with nothing buffered: the loop resumes fetching)
                fetched = Fetched(self.cursor, [])
                new, result = decide(fetched)
                return ((result,), False) if new == fetched.cursor else None
            fetched = Fetched(self.cursor, records)
            new, result = decide(fetched)
            if new == fetched.cursor:
                return (result,), False
            self.cursor = new
            self.trim_locked()
            tell = self.drained_locked() or not self.dirty
            return (result,), tell


class Shared:
    """The mount's published view and its members' states (see the module doc)."""

    def __init__(self) -> None:
        self.view = MountView()
        self._lock = threading.Lock()
        self._members: dict[tuple[str, str], MemberState] = {}

    def publish(self, **changes) -> None:
        """From the loop: replace the view (``topics``, ``health``)."""
        view = self.view
        self.view = MountView(changes.get("topics", view.topics),
                              changes.get("health", view.health))

    def add_member(self, name: str, group: str, state: MemberState) -> None:
        with self._lock:
            self._members[(name, group)] = state

    def remove_member(self, name: str, group: str, state: MemberState) -> None:
        with self._lock:
            if self._members.get((name, group)) is state:
                del self._members[(name, group)]

    def member(self, name: str, group: str) -> MemberState | None:
        with self._lock:
            return self._members.get((name, group))

"""Writer sessions and the bounded buffer between write() and the backend.

Every open for writing is a session: BEGIN is stored at open, each write()
becomes one DATA record (split only above the backend's record limit), and
release queues END.  write() returns once its record is queued; the queue is
bounded in bytes, so a fast writer waits for the store (backpressure).  Each
pipe's queue on this mount is drained by one flusher task in order, in
batches: one backend append per batch.  flush/fsync/close wait until the
session's last record is durable and report the first failure.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable
from typing import ContextManager

import trio

from .backends.base import Backend
from .errors import DnpfsError, Interrupted, NoSuchPipe, PipeGone, ShuttingDown, StoreError
from .metrics import METRICS
from .model import Kind, Record

log = logging.getLogger(__name__)

_BATCH_BYTES = 8 << 20
_BATCH_RECORDS = 4096


def new_session_id(mount_id: str) -> str:
    """``<mount id>.<random>``: readers elsewhere can tell whose session it is,
    and end it if that mount stops showing signs of life (leases.py)."""
    return f"{mount_id}.{secrets.token_hex(6)}"


class Outbox:
    """The queue of one pipe on one mount, and its flusher.

    Batches are stored without forcing them to disk; a batch is made durable
    (``append(..., durable=True)``) only when someone waits for it: close,
    fsync, O_SYNC.  So a bulk writer pays one disk sync per close, not one
    per batch, and a kill -9 of the daemon still loses nothing stored.
    """

    def __init__(
        self, backend: Backend, name: str, limit_bytes: int, delivery_timeout: float = 120.0
    ) -> None:
        self.backend = backend
        self.name = name
        self.limit_bytes = limit_bytes
        # How long one append may take before its sessions get EIO (a broker
        # away, a store locked).  The records may still arrive later.
        self.delivery_timeout = delivery_timeout
        self._queue: deque[tuple[int, Record, WriterSession]] = deque()
        self._queued_bytes = 0
        self._next_seq = 0
        self._stored_seq = -1  # every record up to this one was handed to the backend
        self._durable_seq = -1  # ... and up to this one is settled: durable, or failed
        self._wanted_seq = -1  # the highest record someone waits to be durable
        self._undurable: set[WriterSession] = set()  # sessions with stored, unsynced records
        self._changed = trio.Event()  # something queued, wanted, or settled
        self.sessions: set[WriterSession] = set()

    def _poke(self) -> None:
        # Only set: a new Event here was one per write().  Waiters take a
        # fresh one (_wait_changed).
        self._changed.set()

    async def _wait_changed(self) -> None:
        """Until the next _poke.  Every caller looked at its condition just
        before, with no await since, so a poke already set is one it saw."""
        if self._changed.is_set():
            self._changed = trio.Event()
        await self._changed.wait()

    def leave(self, session: WriterSession) -> None:
        """The session is over: the flusher may stop once the queue is empty."""
        self.sessions.discard(session)
        self._poke()

    @property
    def has_room(self) -> bool:
        return self._queued_bytes < self.limit_bytes

    async def wait_room(self) -> None:
        """Wait until the buffer has room (or is empty: one record may exceed it)."""
        while not self.has_room and self._queue:
            await self._wait_changed()

    async def put(self, record: Record, session: WriterSession) -> int:
        await self.wait_room()
        return self.put_nowait(record, session)

    def put_nowait(self, record: Record, session: WriterSession) -> int:
        """Queue even over the limit (for a marker that must not wait)."""
        seq = self._next_seq
        self._next_seq += 1
        self._queue.append((seq, record, session))
        self._queued_bytes += len(record.data)
        self._poke()
        return seq

    async def wait_stored(self, seq: int) -> None:
        """Wait until record *seq* is visible to readers (or failed)."""
        while self._stored_seq < seq:
            await self._wait_changed()

    async def wait_drained(self) -> None:
        """Wait until every record queued so far was handed to the backend (or failed)."""
        while self._stored_seq < self._next_seq - 1:
            await self._wait_changed()

    def settled(self, seq: int) -> bool:
        return self._durable_seq >= seq

    async def wait_settled(self, seq: int) -> None:
        """Wait until record *seq* is durable (or failed: see the session's error)."""
        if self._durable_seq >= seq:
            return
        self._wanted_seq = max(self._wanted_seq, seq)
        self._poke()
        while self._durable_seq < seq:
            await self._wait_changed()

    async def run(self, on_idle: Callable[[Outbox], None]) -> None:
        """Drain the queue until it is empty and no session is open."""
        while True:
            if self._queue:
                await self._store_batch()
            elif self._wanted_seq > self._durable_seq:
                await self._append([], set(self._undurable), durable=True)
                self._durable_seq = self._stored_seq
                self._undurable.clear()
                self._poke()
            elif self.sessions:
                await self._wait_changed()
            else:
                on_idle(self)
                return

    async def _store_batch(self) -> None:
        batch: list[tuple[int, Record, WriterSession]] = []
        size = 0
        while self._queue and len(batch) < _BATCH_RECORDS and size < _BATCH_BYTES:
            item = self._queue.popleft()
            batch.append(item)
            size += len(item[1].data)
        durable = self._wanted_seq > self._durable_seq
        sessions = {session for _, _, session in batch}
        await self._append([rec for _, rec, _ in batch], sessions | self._undurable, durable)
        self._queued_bytes -= size
        self._stored_seq = batch[-1][0]
        if durable:
            self._durable_seq = self._stored_seq
            self._undurable.clear()
        else:
            self._undurable |= sessions
        self._poke()

    async def _append(self, records: list[Record], sessions: set[WriterSession], durable: bool):
        """Append; on failure, every session whose records were at stake fails."""
        start = trio.current_time()
        try:
            with trio.fail_after(self.delivery_timeout):
                await self.backend.append(self.name, records, durable=durable)
            METRICS.observe_append(trio.current_time() - start)
            METRICS.count("records_in", len(records))
            METRICS.count("bytes_in", sum(len(r.data) for r in records))
            return
        except trio.TooSlowError:
            METRICS.count("delivery_errors")
            log.warning("pipe %s: %d records not stored within %.0fs", self.name, len(records),
                        self.delivery_timeout)
            for session in sessions:
                session.fail(StoreError(f"not stored within {self.delivery_timeout:.0f}s"))
        except DnpfsError as e:
            # The store has no such pipe any more: to its writers, the pipe is gone.
            err = (PipeGone(str(e)) if isinstance(e, NoSuchPipe)
                   else e if isinstance(e, StoreError) else StoreError(str(e)))
            METRICS.count("delivery_errors")
            log.warning("pipe %s: %d records not stored: %s", self.name, len(records), err)
            for session in sessions:
                session.fail(err)
        except Exception as e:  # noqa: BLE001 - a store bug must not kill the daemon
            METRICS.count("delivery_errors")
            log.exception("pipe %s: append failed", self.name)
            for session in sessions:
                session.fail(StoreError(f"append failed: {e}"))


class WriterSession:
    """One open-for-write handle."""

    def __init__(
        self,
        outbox: Outbox,
        max_record: int,
        sync: bool,
        guard: Callable[[], ContextManager[None]] = contextlib.nullcontext,
        mount_id: str = "local",
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.id = new_session_id(mount_id)
        self.outbox = outbox
        self.max_record = max_record
        self.sync = sync
        # Wraps waits a process sits in (a full buffer, close, fsync), so
        # that a signal to it ends the wait with EINTR (interrupts.py).
        self.guard = guard
        # True once the daemon stops (Pipes.closing): no more records are taken.
        self.stopping = stopping
        self.error: DnpfsError | None = None
        self._last_seq = -1
        self.closed = False

    def fail(self, error: DnpfsError) -> None:
        if self.error is None:
            self.error = error

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def _check_writable(self) -> None:
        """Refuse a record that could not be stored any more: once the session
        is closed (its END is queued: a DATA after it would never reach a
        reader, and shutdown stops the store after the ENDs) or the daemon
        stops.  Called with no await between it and the queueing, so a write
        racing with shutdown is either queued before END (and stored) or
        refused; never accepted and dropped."""
        self._check()
        if self.closed or self.stopping():
            raise ShuttingDown("dnpfs is shutting down")

    async def begin(self) -> None:
        """Open the session.  Returns once BEGIN is in the pipe, so a writer
        whose open() returned is open for every reader from then on: another
        writer's close cannot end the stream under it (one EOF, after the last)."""
        self.outbox.sessions.add(self)
        try:
            self._last_seq = self.outbox.put_nowait(Record(Kind.BEGIN, self.id), self)
            with self.guard():
                await self.outbox.wait_stored(self._last_seq)
            self._check()
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        """End a session whose open failed, without waiting: BEGIN may still
        be stored, and readers must not wait for this writer."""
        self.closed = True
        if self.error is None:
            self.outbox.put_nowait(Record(Kind.END, self.id), self)
        self.outbox.leave(self)

    async def write(self, data: bytes) -> int:
        self._check_writable()
        if len(data) <= self.max_record and self.outbox.has_room:
            # The common case in one step: one record, room for it.
            self._last_seq = self.outbox.put_nowait(Record(Kind.DATA, self.id, data), self)
            if self.sync:
                await self.flush()
            return len(data)
        done = 0
        for at in range(0, len(data), self.max_record):
            chunk = data[at : at + self.max_record]
            record = Record(Kind.DATA, self.id, chunk)
            if not self.outbox.has_room:
                try:
                    with self.guard():
                        await self.outbox.wait_room()
                    # Shutdown may have queued this session's END meanwhile.
                    self._check_writable()
                except (Interrupted, ShuttingDown):
                    if done:
                        return done  # a short write: what was queued is stored
                    raise
            self._last_seq = self.outbox.put_nowait(record, self)
            done += len(chunk)
        if self.sync:
            await self.flush()
        return done

    async def flush(self) -> None:
        """Wait until every record of this session so far is stored."""
        if self.closed or self.stopping():
            # Success only if every record is already durable: the store is
            # about to close, so a wait could not end in a truthful 0.
            self._check()
            if not self.outbox.settled(self._last_seq):
                raise ShuttingDown("dnpfs is shutting down")
            return
        with self.guard():
            await self.outbox.wait_settled(self._last_seq)
        self._check()

    async def close(self) -> None:
        """Queue END and wait for it; the caller (release) cannot report errors."""
        if self.closed:
            return
        self.closed = True
        try:
            if not isinstance(self.error, PipeGone):
                self._last_seq = await self.outbox.put(Record(Kind.END, self.id), self)
                await self.outbox.wait_settled(self._last_seq)
        finally:
            self.outbox.leave(self)

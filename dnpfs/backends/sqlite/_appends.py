"""Appends, batched (group commit), and syncing for durable ones.

An append alone after a pause runs in its caller's task; the others wait
for the batch loop, which lingers in a stream of small ones (``LINGER``).

A batch's bytes go to the pipes' segment files, then its index rows are
committed (``_segments``).  A durable append (close, fsync, O_SYNC) syncs
the segments this daemon wrote since its last sync, marks them synced, and
fsyncs the WAL files, which makes every earlier commit durable as well; bulk
writes pay one sync per close instead of one per batch.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ...errors import NoSuchPipe, StoreError
from ...model import Record
from ._batch import Batch
from ._conn import STREAM_GAP, Conn, transaction
from ._schema import records_path
from ._segments import SEGMENT_BYTES, SegmentFiles

log = logging.getLogger(__name__)


# Once this much was written since the last sync, the segments are synced
# in the background, so that a close() waits for the last few MiB only (as
# SQLite's checkpoints synced the records while the bytes were in SQLite).
SYNC_AHEAD = 32 << 20
# A small batch begun within STREAM_GAP of the last one's end (or of its
# linger's) waits until this long after it: one commit then takes every
# write of that time.
LINGER = 0.001
# ... and this long when the last batch took many small records (at least
# SMALL_RECORDS, up to SMALL_BATCH bytes in all): then the commit, not the
# bytes, is the cost of a batch.  Kafka's producer lingers 5 ms by default
# too (linger.ms, since 4.0).  Not for a batch of a few: messages a few ms
# apart would each wait out the linger of the one before.
SMALL_LINGER = 0.005
SMALL_BATCH = 64 << 10
SMALL_RECORDS = 8
# Index rows go in by INSERTs of this many rows at most, then of halves
# (``_insert``).
INSERT_ROWS = 64
# A batch up to this size is written on the trio loop (Conn.run's inline):
# copying it into the page cache takes tens of microseconds.
INLINE_BYTES = 256 << 10


_COLUMNS = 7
_INSERTS = {n: "INSERT INTO data.records (pipe, kind, session, ts, seg, pos, size) VALUES "
               + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * n)
            for n in (INSERT_ROWS >> k for k in range(INSERT_ROWS.bit_length()))}


def _insert(db: sqlite3.Connection, rows: list) -> None:
    """Insert index rows given flat (``_COLUMNS`` values each), many per
    statement: executemany runs the statement once per row, which took about
    twice the time per row (docs/decisions.md, "Small writes, third look").
    Row counts are powers of two, so that a handful of statements serve
    every batch from sqlite3's statement cache."""
    at, count = 0, len(rows) // _COLUMNS
    while at < count:
        n = INSERT_ROWS
        while n > count - at:
            n >>= 1
        db.execute(_INSERTS[n], rows[at * _COLUMNS:(at + n) * _COLUMNS])
        at += n


@dataclass(eq=False)
class _AppendJob:
    name: str
    records: Sequence[Record]
    ts: float
    done: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None


class Appends:
    """The writer connection's work."""

    def __init__(self, conn: Conn, path: Path, segments: SegmentFiles,
                 notify: Callable[[str], None], ring: Callable[[Iterable[str]], None]) -> None:
        self.conn = conn
        self.path = path
        self.segments = segments
        self.notify = notify
        self.ring = ring
        self._jobs = Batch()  # _AppendJobs for loop()
        self._unsynced: dict[tuple[int, int], int] = {}  # (pipe, segment) -> end written
        self._syncing = trio.Lock()
        self._committed = -math.inf  # when the last batch was done (trio clock)
        self._linger = 0.0  # how long after _committed the next batch waits (a stream)
        self._ahead = 0  # bytes written since the last sync began
        self._ahead_running = False

    async def append(self, name: str, records: Sequence[Record], durable: bool) -> None:
        if records:
            job = _AppendJob(name, records, time.time())
            # Run here when it can run at once: handing the batch to loop()
            # and back were two trio hops on a record's way to a reader on
            # another mount.  Never waiting here for a busy store: only the
            # wait below ends at the delivery timeout.
            if not (self._alone(job) and self._run_here(job)):
                self._jobs.put(job)
                # Cancelled (the delivery timeout): the job stays queued and
                # may still be stored later, which at-least-once allows.
                await job.done.wait()
            if job.error is not None:
                raise job.error
        if durable:
            await self._sync()
        if records:
            self.notify(name)

    async def _sync(self) -> None:
        """Make every append so far durable: the segments written, then their
        marks, then the WAL files, where committed frames sit (syncing them
        makes every earlier commit durable too).  One at a time: a second
        caller must not find the segments' list taken and return before the
        first caller synced them.  The syncs run off the writer connection:
        other pipes' appends need not wait for them."""
        async with self._syncing:
            unsynced, self._unsynced = self._unsynced, {}
            try:
                if unsynced:
                    await trio.to_thread.run_sync(self._sync_segments, list(unsynced),
                                                  abandon_on_cancel=True)
                    await self.conn.run(lambda db: self._mark(db, unsynced))
                await trio.to_thread.run_sync(self._sync_wal, abandon_on_cancel=True)
            except BaseException:
                for key, end in unsynced.items():  # the next durable append tries again
                    self._unsynced[key] = max(end, self._unsynced.get(key, 0))
                raise

    def _sync_ahead(self) -> None:
        """fdatasync the segments written so far in a thread of its own,
        waited for by no one: the next durable append syncs them again,
        then with little left to write (SYNC_AHEAD)."""
        keys, self._ahead, self._ahead_running = list(self._unsynced), 0, True

        def done(result) -> None:  # in that thread, with the function's Outcome
            self._ahead_running = False
            try:
                result.unwrap()
            except Exception as e:  # noqa: BLE001 - the durable append syncs again
                log.warning("syncing segments ahead: %s", e)

        trio.lowlevel.start_thread_soon(lambda: self._sync_segments(keys), done)

    def _sync_segments(self, keys: list[tuple[int, int]]) -> None:
        # Not the writer's SegmentFiles: it is the writer thread's alone.
        files = SegmentFiles(self.segments.store, self.segments.access)
        try:
            for pipe, seg in keys:
                files.sync(pipe, seg)
        finally:
            files.close()

    def _mark(self, db: sqlite3.Connection, synced: dict[tuple[int, int], int]) -> None:
        with transaction(db, only="data"):
            self.segments.mark(db, synced)

    def _alone(self, job: _AppendJob) -> bool:
        """*job* would be a batch of its own run on the loop: nothing queued,
        the connection free, a small batch after a pause (see _run)."""
        return (not self._jobs.pending and self.conn.limiter.available_tokens > 0
                and trio.current_time() - self._committed > STREAM_GAP + self._linger
                and sum(len(r.data) for r in job.records) <= INLINE_BYTES)

    async def loop(self) -> None:
        """Group commit: the appends of all pipes waiting meanwhile go into one
        transaction, in the order they came.  One transaction per append
        and pipe made a single writer connection the bottleneck with 100
        pipes (the outboxes grew and latency with them)."""
        while True:
            lingered = False
            if self._linger:
                # A stream of small writes: let a few more come first, so one
                # commit takes them all (dd bs=100: 4-5 writes per commit
                # without it, the writing daemon's CPU per write 2.4x).
                await trio.sleep_until(self._committed + self._linger)
                # Writes came meanwhile: the stream goes on, however late
                # this task woke (on a loaded machine, often a millisecond).
                lingered = self._jobs.pending
            await self._run(await self._jobs.take(), lingered)

    async def _run(self, jobs: list[_AppendJob], lingered: bool = False) -> None:
        """One batch, one commit: every job gets its outcome and is set done.
        *lingered*: the jobs came while the loop lingered."""
        written: dict[tuple[int, int], int] = {}
        # A small batch after a pause runs on the loop (when the store is
        # free): the hop to a worker thread and back was a third of a
        # record's way to a reader on another mount.  In a stream it does
        # not: the writes handled during the hop make the next batch, where
        # on the loop every write became a commit of its own (daemon CPU per
        # 100-byte write doubled).
        batch_bytes = sum(len(r.data) for job in jobs for r in job.records)
        gap = trio.current_time() - self._committed
        inline = gap > STREAM_GAP and batch_bytes <= INLINE_BYTES
        try:
            errors = await self.conn.run(lambda db: self._store(db, jobs, written),
                                         inline=inline)
        except StoreError as e:
            errors, written = [e] * len(jobs), None
        self._done(jobs, errors, written, batch_bytes, gap, lingered)

    def _run_here(self, job: _AppendJob) -> bool:
        """*job* as a batch of its own, on the loop now; False (nothing done)
        if the connection or the store is busy."""
        written: dict[tuple[int, int], int] = {}
        gap = trio.current_time() - self._committed
        try:
            ran, errors = self.conn.run_here(lambda db: self._store(db, [job], written))
        except StoreError as e:
            ran, errors, written = True, [e], None
        if ran:
            self._done([job], errors, written, sum(len(r.data) for r in job.records), gap,
                       False)
        return ran

    def _done(self, jobs: list[_AppendJob], errors: list,
              written: dict[tuple[int, int], int] | None, batch_bytes: int, gap: float,
              lingered: bool) -> None:
        """After a batch (*written* None: it failed as a whole): what to sync,
        whether a stream goes on; the jobs done."""
        if written is not None:
            self._unsynced.update(written)  # ends only grow
            self._ahead += batch_bytes
            if self._ahead >= SYNC_AHEAD and not self._ahead_running:
                self._sync_ahead()
        stream = (lingered or gap <= STREAM_GAP + self._linger) and batch_bytes <= INLINE_BYTES
        many_small = (batch_bytes <= SMALL_BATCH
                      and sum(len(job.records) for job in jobs) >= SMALL_RECORDS)
        self._linger = 0.0 if not stream else SMALL_LINGER if many_small else LINGER
        self._committed = trio.current_time()
        for job, error in zip(jobs, errors):
            job.error = error
            job.done.set()

    def _store(self, db: sqlite3.Connection, jobs: list[_AppendJob],
               written: dict[tuple[int, int], int]) -> list[Exception | None]:
        """Write and index *jobs*; *written* gets the ends of the segments written."""
        written.clear()  # (it may run again: the store was busy)
        errors: list[Exception | None] = []
        with transaction(db, only="data"):  # the catalog is only read
            next_id = None
            for job in jobs:
                # One statement: each one hands the GIL away and waits to get it back.
                row = db.execute(
                    "SELECT p.id, (SELECT coalesce(max(seq), 0) + 1 FROM data.sqlite_sequence"
                    " WHERE name = 'records'), r.seg, r.pos + r.size FROM pipes p LEFT JOIN"
                    " (SELECT seg, pos, size FROM data.records WHERE pipe ="
                    " (SELECT id FROM pipes WHERE name = ?1) ORDER BY id DESC LIMIT 1) r"
                    " WHERE p.name = ?1", (job.name,)).fetchone()
                if row is None:
                    errors.append(NoSuchPipe(job.name))
                    continue
                pipe, first_id, seg, end = row
                next_id = next_id or first_id
                try:
                    rows = self._write(pipe, job, next_id, (seg, end), written)
                except OSError as e:  # disk full, ...: this pipe's batch fails
                    errors.append(StoreError(f"embedded store: {e}"))
                    continue
                _insert(db, rows)
                next_id += len(rows) // _COLUMNS
                errors.append(None)
        # Rung here, in the worker thread, as soon as the commit is done: the
        # hop back to trio first cost the readers on other mounts ~0.1 ms.
        self.ring({job.name for job, error in zip(jobs, errors) if error is None})
        return errors

    def _write(self, pipe: int, job: _AppendJob, next_id: int, last: tuple,
               written: dict[tuple[int, int], int]) -> list:
        """Write *job*'s bytes after the pipe's *last* record (segment, end),
        in a new segment if there is none or it is full; its index rows, one
        after the other in one flat list (``_insert``)."""
        seg, end = last if last[0] is not None and last[1] < SEGMENT_BYTES else (next_id, 0)
        rows, chunks, pos, ts = [], [], end, job.ts
        for r in job.records:
            size = len(r.data)
            # _value_: Kind.value is a property, a Python call per record.
            rows += (pipe, r.kind._value_, r.session, ts, seg, pos, size)
            if size:
                chunks.append(r.data)
                pos += size
        if chunks:
            self.segments.write(pipe, seg, end, chunks)
            written[pipe, seg] = pos
        return rows

    def _sync_wal(self) -> None:
        # Both files: a pipe created just before must survive with its records.
        for path in (self.path, records_path(self.path)):
            try:
                fd = os.open(f"{path}-wal", os.O_RDONLY)
            except FileNotFoundError:
                continue  # checkpointed and removed: the file itself was synced
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

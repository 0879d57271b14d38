"""Group cursors and reads: fetch, let the reader decide, move the cursor.

Reads are batched like appends: the reads of all pipes waiting meanwhile
share one write transaction and one thread hop (``Reads.loop``); a read
alone after a pause runs in its caller's task instead (``Reads._alone``).
Every cursor move is also recorded as in flight (``_inflight``).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from ...errors import NoSuchPipe, StoreError
from ...model import Cursor, Kind, StoredRecord
from ..base import Fetched
from ._batch import Batch
from ._conn import STREAM_GAP, Conn, pipe_id, transaction
from ._inflight import InFlight
from ._schema import KINDS, sessions_set, sessions_text
from ._segments import SegmentFiles

T = TypeVar("T")
_MAX_FETCH_RECORDS = 4096
_ROWS_AT_ONCE = 64  # index rows read (and their bytes fetched) at a time
# Reads whose budgets add up to at most this run on the trio loop (Conn.run's
# inline): one read of a backlog copies at most this much from the page cache.
INLINE_BYTES = 2 << 20


@dataclass(eq=False)
class _ReadJob:
    name: str
    group: str
    max_bytes: int
    decide: Callable
    done: trio.Event = field(default_factory=trio.Event)
    row: int | None = None  # the in-flight range this read took
    result: object = None
    error: Exception | None = None


def group_cursor(db: sqlite3.Connection, pipe: int, group: str) -> Cursor | None:
    row = db.execute("SELECT next, pos, sessions FROM groups WHERE pipe = ? AND name = ?",
                     (pipe, group)).fetchone()
    return Cursor(row[0], row[1], sessions_set(row[2])) if row else None


def fetch_from(db: sqlite3.Connection, segments: SegmentFiles, pipe: int, group: str,
               max_bytes: int, lazy: bool = False) -> Fetched:
    """The group's cursor and the records from it; call inside a transaction."""
    cursor = group_cursor(db, pipe, group) or Cursor()
    return records_from(db, segments, pipe, cursor, max_bytes, lazy)


def records_from(db: sqlite3.Connection, segments: SegmentFiles, pipe: int, cursor: Cursor,
                 max_bytes: int, lazy: bool = False) -> Fetched:
    """The records from *cursor* on.  *lazy*: records are read only as far
    as the caller iterates, a few index rows at a time (a packet read of one
    record in a backlog of thousands reads a few rows, not thousands); the
    transaction must outlive the iteration, and the caller must close() the
    records (see _decide)."""
    def records():
        rows = db.execute(
            "SELECT id, kind, session, seg, pos, size FROM data.records"
            " WHERE pipe = ? AND id >= ? ORDER BY id LIMIT ?",
            (pipe, cursor.offset, _MAX_FETCH_RECORDS))
        try:
            budget = max_bytes
            while budget > 0:
                chunk = []
                # Only the rows the budget reaches: their bytes are read at once.
                for row in rows.fetchmany(_ROWS_AT_ONCE):
                    chunk.append(row)
                    start = cursor.byte_pos if row[0] == cursor.offset else 0
                    budget -= min(row[5] - start, max_bytes)
                    if budget <= 0:
                        break
                if not chunk:
                    break
                yield from _read(segments, pipe, cursor, chunk, max_bytes)
        finally:
            rows.close()

    return Fetched(cursor, records() if lazy else list(records()))


def _read(segments: SegmentFiles, pipe: int, cursor: Cursor, rows: list[tuple],
          max_bytes: int) -> list[StoredRecord]:
    """The records of index *rows*, at most *max_bytes* of each (from the
    cursor's byte position in the first), with one pread per run of records
    that lie back to back in one segment (the records of one batch)."""
    spans = []  # (row, start in the record, bytes wanted)
    for row in rows:
        rid, size = row[0], row[5]
        start = cursor.byte_pos if rid == cursor.offset else 0
        spans.append((row, start, max(0, min(size - start, max_bytes))))
    out: list[StoredRecord] = []
    at = 0
    while at < len(spans):
        row, start, want = spans[at]
        seg, first = row[3], row[4] + start
        end, stop = at + 1, first + want
        if start + want == row[5]:  # read to its end: the next record may follow on
            while end < len(spans):
                (_, _, _, seg2, pos2, size2), start2, want2 = spans[end]
                if seg2 != seg or pos2 != stop or start2 or want2 != size2:
                    break
                stop += want2
                end += 1
        data = segments.read(pipe, seg, first, stop - first)
        offset = 0
        for (rid, kind, session, _, _, size), start, want in spans[at:end]:
            if data is None:
                # Index rows whose bytes are gone (their segment removed by
                # retention after this read's snapshot, or lost): a read error
                # for the reader that reaches them, not bytes made up.
                out.append(StoredRecord(rid, Kind.UNREADABLE, session, b"", start, size))
                continue
            piece = data if end - at == 1 else data[offset:offset + want]
            out.append(StoredRecord(rid, KINDS[kind], session, piece, start, size))
            offset += want
        at = end
    return out


def move(db: sqlite3.Connection, pipe: int, group: str, expected: Cursor, new: Cursor) -> bool:
    """Compare-and-swap of the group's cursor; call inside a write transaction."""
    cur = db.execute(
        "UPDATE groups SET next = ?, pos = ?, sessions = ?"
        " WHERE pipe = ? AND name = ? AND next = ? AND pos = ? AND sessions = ?",
        (new.offset, new.byte_pos, sessions_text(new.open_sessions), pipe, group,
         expected.offset, expected.byte_pos, sessions_text(expected.open_sessions)),
    )
    if cur.rowcount:
        return True
    if expected == Cursor():  # the group row may not exist yet
        cur = db.execute(
            "INSERT OR IGNORE INTO groups (pipe, name, next, pos, sessions)"
            " VALUES (?, ?, ?, ?, ?)",
            (pipe, group, new.offset, new.byte_pos, sessions_text(new.open_sessions)),
        )
        return cur.rowcount == 1
    return False


def _decide(decide: Callable[[Fetched], T], fetched: Fetched) -> T:
    """decide(fetched), then end the statement behind lazily read records: a
    statement left open keeps the connection's read snapshot after COMMIT, and
    its next BEGIN IMMEDIATE fails (SQLITE_BUSY_SNAPSHOT) until it is closed."""
    try:
        return decide(fetched)
    finally:
        close = getattr(fetched.records, "close", None)
        if close is not None:
            close()


def _plan(job: _ReadJob, fetched: Fetched):
    """(outcome, None) when *job*'s read is decided without moving its
    group's cursor (or decide failed: nothing moved), else (None, (old, new,
    result)) for the move.  An error of the store itself propagates: the
    whole batch fails or runs again."""
    try:
        new, result = _decide(job.decide, fetched)
    except sqlite3.Error:
        raise
    except Exception as e:  # noqa: BLE001 - reported to that read alone
        return (None, None, e), None
    if new == fetched.cursor:
        return (None, result, None), None
    return None, (fetched.cursor, new, result)


class Reads:
    """The reader connection's work: cursors, fetches and batched reads."""

    def __init__(self, conn: Conn, inflight: InFlight, segments: SegmentFiles) -> None:
        self.conn = conn
        self.inflight = inflight
        self.segments = segments
        self._jobs = Batch()  # _ReadJobs for loop()
        self._done_at = -math.inf  # when the last batch was done (trio clock)

    async def attach(self, name: str, group: str) -> int:
        def attach(db: sqlite3.Connection) -> int:
            with transaction(db):
                pipe = pipe_id(db, name)
                db.execute(
                    "INSERT OR IGNORE INTO groups (pipe, name, next, pos, sessions)"
                    " VALUES (?, ?, 0, 0, '')",
                    (pipe, group),
                )
                # Ids come from one AUTOINCREMENT sequence: later records are larger.
                row = db.execute(
                    "SELECT seq FROM data.sqlite_sequence WHERE name = 'records'").fetchone()
                return (row[0] if row else 0) + 1

        return await self.conn.run(attach)

    async def fetch(self, name: str, group: str, max_bytes: int) -> Fetched:
        def fetch(db: sqlite3.Connection) -> Fetched:
            db.execute("BEGIN")  # one read snapshot: cursor and records agree
            try:
                return fetch_from(db, self.segments, pipe_id(db, name), group, max_bytes)
            finally:
                db.execute("COMMIT")

        return await self.conn.run(fetch)

    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        def commit(db: sqlite3.Connection) -> bool:
            with transaction(db):
                return move(db, pipe_id(db, name), group, expected, new)

        return await self.conn.run(commit)

    async def consume(self, name, group, max_bytes, decide, holder=None):
        # The cursor move is recorded as in flight; once this coroutine has
        # returned to the reader, pyfuse3 writes the reply before trio runs
        # anything else, so rows in inflight.delivered are acknowledged
        # (deleted) by the next batch or by the ack loop; a *holder*'s rows
        # (the Holds capability) wait in inflight.holders until it settles.  A kill -9 in
        # between delivers the range again.  Shielded: a read whose cursor
        # moved must return its bytes, so it cannot stop half way (as a
        # thread call never could).
        if self._jobs.closed:
            raise StoreError("embedded store: closed")
        job = _ReadJob(name, group, max_bytes, decide)
        with trio.CancelScope(shield=True):
            # Run here when it can run at once: handing the read to loop()
            # and back were two trio hops, two of the dozen steps of a
            # cross-mount read.
            if not (self._alone(job) and self._run_here(job)):
                self._jobs.put(job)
                await job.done.wait()
        if job.error is not None:
            raise job.error
        if job.row is not None:
            if holder is None:
                self.inflight.delivered.append(job.row)
            else:
                self.inflight.holders.setdefault(holder, []).append(job.row)
        return job.result

    def _alone(self, job: _ReadJob) -> bool:
        """*job* would be a batch of its own run on the loop: no read queued,
        the connection free, and after a pause (not in a stream of reads,
        which must batch)."""
        return (not self._jobs.pending and self.conn.limiter.available_tokens > 0
                and trio.current_time() - self._done_at > STREAM_GAP
                and job.max_bytes <= INLINE_BYTES)

    async def loop(self) -> None:
        """Group commit for reads.  One write transaction per read, with two
        daemons and hundreds of readers, left the readers seconds behind:
        SQLite has one write lock, and a transaction held it across every
        GIL hand-off between its statements."""
        try:
            while True:
                jobs = await self._jobs.take()
                # On the loop after a pause, when the store is free and
                # the reads are few: the hop to a worker thread and back
                # was a third of a cross-mount read's latency.  Not in a
                # stream of reads: the reads that come during the hop
                # make the next batch, one write transaction for all.
                inline = (trio.current_time() - self._done_at > STREAM_GAP
                          and sum(job.max_bytes for job in jobs) <= INLINE_BYTES)
                await self._run(jobs, inline)
        finally:
            # Stopped: reads still waiting (shielded) must not wait forever.
            for job in self._jobs.close():
                job.error = StoreError("embedded store: closed")
                job.done.set()

    async def _run(self, jobs: list[_ReadJob], inline: bool) -> None:
        """One batch: every job gets its outcome and is set done."""
        done, self.inflight.delivered = self.inflight.delivered, []
        try:
            outcomes, acknowledged = await self.conn.run(
                lambda db: self._consume_jobs(db, jobs, done), inline=inline)
        except StoreError as e:
            outcomes, acknowledged = [(None, None, e)] * len(jobs), False
        self._done(jobs, outcomes, acknowledged, done)

    def _run_here(self, job: _ReadJob) -> bool:
        """*job* as a batch of its own, on the loop now, in one write
        transaction from the start (a bell woke it, so it likely moves the
        cursor: a read snapshot first, then the lock, were two transactions);
        False (nothing done) if the connection or the store is busy."""
        done, self.inflight.delivered = self.inflight.delivered, []
        try:
            ran, result = self.conn.run_here(
                lambda db: self._consume_jobs(db, [job], done, locked=True))
        except StoreError as e:
            ran, result = True, ([(None, None, e)], False)
        if not ran:
            self.inflight.delivered[:0] = done
            return False
        self._done([job], *result, done)
        return True

    def _done(self, jobs: list[_ReadJob], outcomes: list, acknowledged: bool,
              done: list[int]) -> None:
        """After a batch: the in-flight rows *done* kept unless acknowledged;
        every job gets its outcome and is set done."""
        if not acknowledged:
            self.inflight.delivered[:0] = done
        self._done_at = trio.current_time()
        for job, (row, result, error) in zip(jobs, outcomes):
            job.row, job.result, job.error = row, result, error
            job.done.set()

    def _consume_jobs(self, db: sqlite3.Connection, jobs: list[_ReadJob], done: list[int],
                      locked: bool = False):
        """(in-flight row, decide's result, error) for each job, and whether
        the in-flight rows *done* were deleted.  May run again from the start
        when the store is busy, so it changes no job.  *locked*: all of it in
        one write transaction (for a read alone after a pause).

        Every read is decided from one read snapshot, without the write lock:
        most wake-ups find nothing new (another reader was first).  The write
        transaction then only moves cursors by compare-and-swap; a read whose
        cursor another reader moved meanwhile is decided again under the lock.
        Few statements under the lock matter more than their cost: each one
        hands the GIL to another thread and waits to get it back.

        *done* is deleted only with a cursor move: a read that finds nothing
        (the one after each delivery) takes no write lock for it alone; the
        ack loop deletes the rows within ACK_INTERVAL."""
        if locked:
            with transaction(db, only="main"):  # the records are only read
                return self._consume_in(db, jobs, done, locked)
        return self._consume_in(db, jobs, done, locked)

    def _consume_in(self, db: sqlite3.Connection, jobs: list[_ReadJob], done: list[int],
                    locked: bool):
        inflight = self.inflight
        outcomes: list = [None] * len(jobs)
        planned: dict[int, tuple[int, Cursor, Cursor, object]] = {}  # i -> pipe, old, new, result
        pipes: dict[int, int] = {}  # i -> pipe id
        if not locked:
            db.execute("BEGIN")
        try:
            orphaned = inflight.orphaned(db)
            heads = self._heads(db, jobs)
            for i, job in enumerate(jobs):
                pipe, cursor, head = heads[i]
                if pipe is None:
                    outcomes[i] = (None, None, NoSuchPipe(job.name))
                    continue
                pipes[i] = pipe
                if (pipe, job.group) in orphaned:
                    continue  # a dead daemon's reads come first: under the lock
                if cursor is not None and (head is None or head < cursor.offset):
                    fetched = Fetched(cursor, [])
                else:
                    fetched = records_from(db, self.segments, pipe, cursor or Cursor(),
                                           job.max_bytes, lazy=True)
                outcomes[i], planned_move = _plan(job, fetched)
                if planned_move is not None:
                    planned[i] = (pipe, *planned_move)
        finally:
            if not locked:
                db.execute("COMMIT")
        again = [i for i in pipes if outcomes[i] is None and i not in planned]
        if not planned and not again and not locked:
            return outcomes, False
        # The records are only read: the catalog's lock alone (_conn.transaction).
        with contextlib.nullcontext() if locked else transaction(db, only="main"):
            inflight.delete(db, done)
            for i, (pipe, old, new, result) in planned.items():
                if move(db, pipe, jobs[i].group, old, new):
                    outcomes[i] = (inflight.take(db, pipe, jobs[i].group, old, new),
                                   result, None)
                else:
                    again.append(i)
            for i in sorted(again):
                job, pipe = jobs[i], pipes[i]
                try:
                    redelivered = inflight.redeliver(db, self.segments, pipe, job.group,
                                                     job.decide)
                except sqlite3.Error:
                    raise
                except Exception as e:  # noqa: BLE001 - decide failed: nothing moved
                    outcomes[i] = (None, None, e)
                    continue
                if redelivered is not None:
                    outcomes[i] = (*redelivered, None)
                    continue
                outcomes[i], planned_move = _plan(
                    job, fetch_from(db, self.segments, pipe, job.group, job.max_bytes,
                                    lazy=True))
                if planned_move is not None:  # under the lock the cursor is as read: it holds
                    old, new, result = planned_move
                    move(db, pipe, job.group, old, new)
                    outcomes[i] = (inflight.take(db, pipe, job.group, old, new), result, None)
        return outcomes, True

    @staticmethod
    def _heads(db: sqlite3.Connection, jobs: Sequence[_ReadJob]):
        """(pipe id or None, group cursor or None, newest record id or None)
        for each job, in one statement per 1,000 jobs."""
        out = []
        for at in range(0, len(jobs), 1000):
            chunk = jobs[at:at + 1000]
            values = ",".join("(?, ?, ?)" for _ in chunk)
            params = [x for n, job in enumerate(chunk) for x in (n, job.name, job.group)]
            rows = {n: rest for n, *rest in db.execute(
                f"WITH j(n, name, grp) AS (VALUES {values})"
                " SELECT j.n, p.id, g.next, g.pos, g.sessions,"
                " (SELECT max(id) FROM data.records r WHERE r.pipe = p.id)"
                " FROM j LEFT JOIN pipes p ON p.name = j.name"
                " LEFT JOIN groups g ON g.pipe = p.id AND g.name = j.grp", params)}
            for n in range(len(chunk)):
                pipe, nxt, pos, sessions, head = rows[n]
                cursor = None if nxt is None else Cursor(nxt, pos, sessions_set(sessions))
                out.append((pipe, cursor, head))
        return out

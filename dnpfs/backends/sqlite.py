"""The embedded store: SQLite files that any number of daemons on one host share.

Why SQLite: it is in the standard library, its WAL mode lets several processes
(two containers sharing a volume) append and read concurrently, and a commit
is atomic, so a group cursor moves by compare-and-swap across processes.

Each connection is used by one thread at a time (a CapacityLimiter of 1), so
the trio loop never waits on the disk.  Every commit uses WAL with
synchronous=NORMAL: atomic, and it survives kill -9 of the daemon (the
frames are in the page cache).  A durable append (close, fsync, O_SYNC) then
fsyncs the WAL files, which makes every earlier commit durable as well; bulk
writes pay one sync per close instead of one per batch.  Cursor moves are
never synced: after a power cut a few bytes may be delivered again, which
at-least-once allows.

Other daemons' commits are noticed by polling ``PRAGMA data_version``, which
costs one page-cache read; ``poll_interval`` bounds the added latency.

A read moves the group's cursor before the kernel has the reply, so a daemon
killed in between would lose those bytes.  Each cursor move is therefore also
written as an *in-flight* range owned by this daemon, and deleted once the
reply is surely written (see ``consume``).  Ranges of a dead owner are
delivered again, first, to the group's next reader: at least once.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from ..errors import PipeGone, StoreError
from ..model import Cursor, Kind, Record, StoredRecord
from ..names import DEFAULT_GROUP
from .base import Backend, ChangeCallback, Fetched, GroupStats, PipeStats

log = logging.getLogger(__name__)
T = TypeVar("T")

# Two files: the records, in large pages (a record is up to 1 MiB: 16 WAL
# frames instead of 256), and the catalog (pipes, cursors, reads in flight,
# heartbeats), in small pages, because every read() rewrites a cursor: with
# 64 KiB pages each small cursor transaction wrote ~256 KiB of WAL.  A
# transaction that writes one file is atomic; only deleting a pipe writes both
# (a crash in between leaves unreachable records that retention removes).
RECORDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    pipe    INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    session TEXT,
    ts      REAL NOT NULL,
    data    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_pipe ON records (pipe, id);
CREATE INDEX IF NOT EXISTS records_by_age ON records (ts);
"""
CATALOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS pipes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mounts (
    id   TEXT PRIMARY KEY,
    seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    pipe     INTEGER NOT NULL,
    name     TEXT NOT NULL,
    next     INTEGER NOT NULL,
    pos      INTEGER NOT NULL,
    sessions TEXT NOT NULL,
    PRIMARY KEY (pipe, name)
);
CREATE TABLE IF NOT EXISTS inflight (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: owners delete by id
    pipe      INTEGER NOT NULL,
    grp       TEXT NOT NULL,
    owner     TEXT NOT NULL,
    taken     REAL NOT NULL,
    first     INTEGER NOT NULL,
    first_pos INTEGER NOT NULL,
    last      INTEGER NOT NULL,
    last_pos  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS inflight_by_group ON inflight (pipe, grp);
"""

_KINDS = {k.value: k for k in Kind.stored()}
_MAX_FETCH_RECORDS = 4096
_RETENTION_IDS = 2000  # record ids pruned per transaction
_RETENTION_PIPES = 10  # pipes pruned per transaction
# An in-flight range whose owner cannot be checked (another PID namespace,
# another container) is presumed dead when unacknowledged for this long; a
# live owner acknowledges within ACK_INTERVAL.
ORPHAN_AGE = 30.0
ACK_INTERVAL = 0.1
_BUSY, _LOCKED = 5, 6  # SQLite's primary result codes


def _process_identity(pid: int | str) -> str | None:
    """The start time of process *pid* (field 22 of /proc/PID/stat), which
    tells a live process from a later one that reused its pid; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _owner_token() -> str:
    """Who owns an in-flight range: PID namespace, pid and start time."""
    return f"{os.readlink('/proc/self/ns/pid')} {os.getpid()} {_process_identity('self')}"


def default_store_path() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/dnpfs/store.sqlite")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "dnpfs" / "store.sqlite"


def records_path(store: Path) -> Path:
    """The file beside the catalog that holds a store's records."""
    return store.with_name(store.name + ".records")


def _sessions_text(sessions: frozenset[str]) -> str:
    return ",".join(sorted(sessions))


def _sessions_set(text: str) -> frozenset[str]:
    return frozenset(text.split(",")) if text else frozenset()


class _Conn:
    """One sqlite3 connection, used from one worker thread at a time."""

    def __init__(self, path: Path, synchronous: str, busy_ms: int) -> None:
        # No busy timeout in SQLite: its busy handler sleeps 1, 2, 5, 10 ...
        # 100 ms while another daemon holds the write lock for well under a
        # millisecond; two daemons under load spent most of their time
        # asleep there (7 ms per wait, measured).  run() retries instead.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                  timeout=0)
        self.busy_seconds = busy_ms / 1000
        self.db.execute("ATTACH DATABASE ? AS data", (str(records_path(path)),))
        for schema in ("main", "data"):
            self.db.execute(f"PRAGMA {schema}.journal_mode=WAL")
            self.db.execute(f"PRAGMA {schema}.synchronous={synchronous}")
        self.limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[[sqlite3.Connection], T], abandon: bool = False) -> T:
        """Run *fn* (one transaction: it may run again when the store was
        busy) in a worker thread.  *abandon*: a cancelled caller stops
        waiting while the thread finishes on its own (the connection stays
        reserved until then) — only for work whose late success harms no one."""
        def call() -> T:
            deadline = time.monotonic() + self.busy_seconds
            pause = 0.0002
            while True:
                try:
                    return fn(self.db)
                except sqlite3.Error as e:
                    try:
                        if self.db.in_transaction:
                            self.db.rollback()
                    except sqlite3.ProgrammingError:
                        pass  # the connection is closed: nothing to roll back
                    busy = (getattr(e, "sqlite_errorcode", 0) & 0xFF) in (_BUSY, _LOCKED)
                    if not busy or time.monotonic() > deadline:
                        raise StoreError(f"embedded store: {e}") from e
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

        return await trio.to_thread.run_sync(call, limiter=self.limiter,
                                             abandon_on_cancel=abandon)


class _Batch:
    """Jobs queued for a loop that takes them all at once (group commit)."""

    def __init__(self) -> None:
        self._jobs: list = []
        self._waiting = trio.Event()
        self.closed = False

    def put(self, job) -> None:
        self._jobs.append(job)
        self._waiting.set()

    async def take(self) -> list:
        """Every job queued since the last take; waits for one if none is."""
        while not self._jobs:
            await self._waiting.wait()
            self._waiting = trio.Event()
        jobs, self._jobs = self._jobs, []
        return jobs

    def close(self) -> list:
        """Take no more jobs; returns those still queued."""
        self.closed = True
        jobs, self._jobs = self._jobs, []
        return jobs


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


@dataclass(eq=False)
class _AppendJob:
    name: str
    rows: list[tuple]  # (kind, session, ts, data)
    done: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None


def _transaction(db: sqlite3.Connection):
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front, so a
    read-then-write transaction never fails half way on a lock upgrade."""
    return _Tx(db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        # Wait for the write lock here, briefly, rather than in _Conn.run,
        # which would run the whole function again (a batch of reads first
        # decides from a read snapshot: that work is still good).
        pause, deadline = 0.0002, time.monotonic() + 0.5
        while True:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                return self.db
            except sqlite3.OperationalError as e:
                busy = (getattr(e, "sqlite_errorcode", 0) & 0xFF) in (_BUSY, _LOCKED)
                if not busy or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.002)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.rollback()


def _group_cursor(db: sqlite3.Connection, pid: int, group: str) -> Cursor | None:
    row = db.execute("SELECT next, pos, sessions FROM groups WHERE pipe = ? AND name = ?",
                     (pid, group)).fetchone()
    return Cursor(row[0], row[1], _sessions_set(row[2])) if row else None


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


def _pipe_id(db: sqlite3.Connection, name: str) -> int:
    row = db.execute("SELECT id FROM pipes WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise PipeGone(name)
    return row[0]


class SqliteBackend(Backend):
    def __init__(
        self,
        path: Path | str | None = None,
        *,
        retention_seconds: float = 7 * 24 * 3600,
        retention_interval: float = 30.0,
        poll_interval: float = 0.005,
        busy_ms: int = 30_000,
    ) -> None:
        self.path = Path(path) if path else default_store_path()
        self.retention_seconds = retention_seconds
        self.retention_interval = retention_interval
        self.poll_interval = poll_interval
        self.busy_ms = busy_ms
        self.description = f"sqlite:{self.path}"
        self._on_change: ChangeCallback = lambda name: None
        # Who owns in-flight ranges: taken in start(), in the process that
        # serves the mount (`dnpfs mount` forks; its parent exits at once).
        self._owner = ""
        self._namespace = ""
        self._delivered: list[int] = []  # in-flight rows whose read reply is written
        self._alive: dict[str, tuple[bool, float]] = {}  # owner -> (alive, checked at)
        self._appends = _Batch()  # _AppendJobs for _append_loop
        self._reads = _Batch()  # _ReadJobs for _read_loop
        self._closed = False

    # -- lifecycle ---------------------------------------------------------
    def check(self) -> None:
        """Create the store if needed, or raise StoreError with one readable
        line.  Synchronous and connection-free, so the CLI can call it before
        it forks into the background."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for path in (self.path, records_path(self.path)):
                with open(path, "ab"):  # says why (read-only, permission) better than sqlite
                    pass
        except OSError as e:
            raise StoreError(f"cannot use store {self.path}: {e.strerror}") from e
        try:
            for path, schema, page_size in ((self.path, CATALOG_SCHEMA, 4096),
                                            (records_path(self.path), RECORDS_SCHEMA, 65536)):
                probe = sqlite3.connect(path, timeout=self.busy_ms / 1000)
                try:
                    # Takes effect only on a new file, before WAL mode is set.
                    probe.execute(f"PRAGMA page_size={page_size}")
                    probe.execute("PRAGMA journal_mode=WAL")
                    probe.executescript(schema)
                    if path == self.path and probe.execute(
                            "SELECT 1 FROM sqlite_master WHERE name = 'records'").fetchone():
                        raise StoreError(f"cannot use store {self.path}: it was made by an"
                                         " earlier dnpfs (records inside the catalog file);"
                                         " start a new store")
                finally:
                    probe.close()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot use store {self.path}: {e}") from e

    async def start(self, nursery: trio.Nursery, on_change: ChangeCallback) -> None:
        self.check()
        self._owner = _owner_token()
        self._namespace = self._owner.split(" ")[0]
        self._writer = _Conn(self.path, "NORMAL", self.busy_ms)
        self._reader = _Conn(self.path, "NORMAL", self.busy_ms)
        self._meta = _Conn(self.path, "NORMAL", self.busy_ms)
        self._watch = _Conn(self.path, "NORMAL", self.busy_ms)
        self._on_change = on_change
        self._pipe_names: dict[int, str] = {}
        self._pipes_signature = None
        self._newest = await self._watch.run(
            lambda db: db.execute("SELECT coalesce(max(id), 0) FROM data.records").fetchone()[0])
        await self._watch.run(self._changes)
        nursery.start_soon(self._watch_changes)
        nursery.start_soon(self._retention_loop)
        nursery.start_soon(self._ack_loop)
        nursery.start_soon(self._append_loop)
        nursery.start_soon(self._read_loop)

    async def close(self) -> None:
        try:
            await self._acknowledge()  # a clean stop leaves nothing to deliver again
        except StoreError as e:
            log.warning("acknowledging reads at close: %s", e)
        self._closed = True  # background loops now end quietly
        for conn in (self._writer, self._reader, self._meta, self._watch):
            await conn.run(lambda db: db.close())

    # -- pipes -------------------------------------------------------------
    async def create_pipe(self, name: str) -> bool:
        def create(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                cur = db.execute(
                    "INSERT OR IGNORE INTO pipes (name, created) VALUES (?, ?)", (name, time.time())
                )
                if cur.rowcount == 0:
                    return False
                db.execute(
                    "INSERT INTO groups (pipe, name, next, pos, sessions) VALUES (?, ?, 0, 0, '')",
                    (cur.lastrowid, DEFAULT_GROUP),
                )
                return True

        created = await self._meta.run(create)
        self._on_change(name, True)
        return created

    async def delete_pipe(self, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                try:
                    pid = _pipe_id(db, name)
                except PipeGone:
                    return False
                db.execute("DELETE FROM data.records WHERE pipe = ?", (pid,))
                db.execute("DELETE FROM groups WHERE pipe = ?", (pid,))
                db.execute("DELETE FROM inflight WHERE pipe = ?", (pid,))
                db.execute("DELETE FROM pipes WHERE id = ?", (pid,))
                return True

        deleted = await self._meta.run(delete)
        self._on_change(name, True)
        return deleted

    async def list_pipes(self) -> list[str]:
        return await self._meta.run(
            lambda db: [r[0] for r in db.execute("SELECT name FROM pipes ORDER BY name")]
        )

    async def pipe_exists(self, name: str) -> bool:
        return await self._meta.run(
            lambda db: db.execute("SELECT 1 FROM pipes WHERE name = ?", (name,)).fetchone()
            is not None
        )

    # -- records -----------------------------------------------------------
    async def append(self, name: str, records: Sequence[Record], durable: bool = True) -> None:
        if records:
            job = _AppendJob(name, [(r.kind.value, r.session, time.time(), r.data)
                                    for r in records])
            self._appends.put(job)
            # Cancelled (the delivery timeout): the job stays queued and may
            # still be stored later, which at-least-once allows.
            await job.done.wait()
            if job.error is not None:
                raise job.error
        if durable:
            # Committed frames sit in the WAL files; syncing them makes every
            # earlier commit durable too (a checkpoint syncs on its own).  Off
            # the writer connection: other pipes' appends need not wait for it.
            await trio.to_thread.run_sync(self._sync_wal, abandon_on_cancel=True)
        if records:
            self._on_change(name)

    async def _append_loop(self) -> None:
        """Group commit: the appends of all pipes waiting meanwhile go into one
        transaction, in the order they came.  One transaction per append
        and pipe made a single writer connection the bottleneck with 100
        pipes (the outboxes grew and latency with them)."""
        while True:
            jobs = await self._appends.take()
            try:
                errors = await self._writer.run(lambda db: self._store_jobs(db, jobs))
            except StoreError as e:
                errors = [e] * len(jobs)
            for job, error in zip(jobs, errors):
                job.error = error
                job.done.set()

    @staticmethod
    def _store_jobs(db: sqlite3.Connection, jobs: list[_AppendJob]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        with _transaction(db):
            for job in jobs:
                try:
                    pid = _pipe_id(db, job.name)
                except PipeGone as e:
                    errors.append(e)
                    continue
                db.executemany(
                    "INSERT INTO data.records (pipe, kind, session, ts, data)"
                    " VALUES (?, ?, ?, ?, ?)", [(pid, *row) for row in job.rows])
                errors.append(None)
        return errors

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

    # -- reader groups -----------------------------------------------------
    async def attach(self, name: str, group: str) -> int:
        def attach(db: sqlite3.Connection) -> int:
            with _transaction(db):
                pid = _pipe_id(db, name)
                db.execute(
                    "INSERT OR IGNORE INTO groups (pipe, name, next, pos, sessions)"
                    " VALUES (?, ?, 0, 0, '')",
                    (pid, group),
                )
                # Ids come from one AUTOINCREMENT sequence: later records are larger.
                row = db.execute(
                    "SELECT seq FROM data.sqlite_sequence WHERE name = 'records'").fetchone()
                return (row[0] if row else 0) + 1

        return await self._reader.run(attach)

    async def detach(self, name: str, group: str) -> None:
        pass  # groups are rows; nothing is held per mount

    @staticmethod
    def _fetch(db: sqlite3.Connection, pid: int, group: str, max_bytes: int,
               lazy: bool = False) -> Fetched:
        """The group's cursor and the records from it; call inside a transaction."""
        cursor = _group_cursor(db, pid, group) or Cursor()
        return SqliteBackend._records(db, pid, cursor, max_bytes, lazy)

    @staticmethod
    def _records(db: sqlite3.Connection, pid: int, cursor: Cursor, max_bytes: int,
                 lazy: bool = False) -> Fetched:
        """The records from *cursor* on.  *lazy*: records are read from the
        table only as far as the caller iterates (a packet read of one record
        in a backlog of thousands reads one row, not thousands); the
        transaction must outlive the iteration, and the caller must close()
        the records (see _decide)."""
        def records():
            # substr() reads only the part of a large record a read can use.
            rows = db.execute(
                "SELECT id, kind, session, length(data),"
                " substr(data, CASE WHEN id = ? THEN ? ELSE 1 END, ?)"
                " FROM data.records WHERE pipe = ? AND id >= ? ORDER BY id LIMIT ?",
                (cursor.offset, cursor.byte_pos + 1, max_bytes, pid, cursor.offset,
                 _MAX_FETCH_RECORDS),
            )
            try:
                budget = max_bytes
                for rid, kind, session, size, data in rows:
                    start = cursor.byte_pos if rid == cursor.offset else 0
                    data = data or b""  # substr() of an empty blob is NULL
                    yield StoredRecord(rid, _KINDS[kind], session, data, start, size)
                    budget -= len(data)
                    if budget <= 0:
                        break
            finally:
                rows.close()

        return Fetched(cursor, records() if lazy else list(records()))

    @staticmethod
    def _move(db: sqlite3.Connection, pid: int, group: str, expected: Cursor, new: Cursor) -> bool:
        cur = db.execute(
            "UPDATE groups SET next = ?, pos = ?, sessions = ?"
            " WHERE pipe = ? AND name = ? AND next = ? AND pos = ? AND sessions = ?",
            (new.offset, new.byte_pos, _sessions_text(new.open_sessions), pid, group,
             expected.offset, expected.byte_pos, _sessions_text(expected.open_sessions)),
        )
        if cur.rowcount:
            return True
        if expected == Cursor():  # the group row may not exist yet
            cur = db.execute(
                "INSERT OR IGNORE INTO groups (pipe, name, next, pos, sessions)"
                " VALUES (?, ?, ?, ?, ?)",
                (pid, group, new.offset, new.byte_pos, _sessions_text(new.open_sessions)),
            )
            return cur.rowcount == 1
        return False

    async def fetch(self, name: str, group: str, max_bytes: int) -> Fetched:
        def fetch(db: sqlite3.Connection) -> Fetched:
            db.execute("BEGIN")  # one read snapshot: cursor and records agree
            try:
                return self._fetch(db, _pipe_id(db, name), group, max_bytes)
            finally:
                db.execute("COMMIT")

        return await self._reader.run(fetch)

    async def consume(self, name, group, max_bytes, decide, blocking=False):
        # Reads are batched like appends (_read_loop): the reads of all pipes
        # waiting meanwhile share one write transaction and one thread hop.
        # The cursor move is recorded as in flight; once this coroutine has
        # returned to the reader, pyfuse3 writes the reply before trio runs
        # anything else, so rows in _delivered are acknowledged (deleted) by
        # the next batch or by _ack_loop.  A kill -9 in between delivers the
        # range again.  Shielded: a read whose cursor moved must return its
        # bytes, so it cannot stop half way (as a thread call never could).
        if self._reads.closed:
            raise StoreError("embedded store: closed")
        job = _ReadJob(name, group, max_bytes, decide)
        self._reads.put(job)
        with trio.CancelScope(shield=True):
            await job.done.wait()
        if job.error is not None:
            raise job.error
        if job.row is not None:
            self._delivered.append(job.row)
        return job.result

    async def _read_loop(self) -> None:
        """Group commit for reads.  One write transaction per read, with two
        daemons and hundreds of readers, left the readers seconds behind:
        SQLite has one write lock, and a transaction held it across every
        GIL hand-off between its statements."""
        try:
            while True:
                jobs = await self._reads.take()
                done, self._delivered = self._delivered, []
                try:
                    outcomes = await self._reader.run(
                        lambda db: self._consume_jobs(db, jobs, done))
                except StoreError as e:
                    self._delivered[:0] = done
                    outcomes = [(None, None, e)] * len(jobs)
                for job, (row, result, error) in zip(jobs, outcomes):
                    job.row, job.result, job.error = row, result, error
                    job.done.set()
        finally:
            # Stopped: reads still waiting (shielded) must not wait forever.
            for job in self._reads.close():
                job.error = StoreError("embedded store: closed")
                job.done.set()

    def _consume_jobs(self, db: sqlite3.Connection, jobs: list[_ReadJob], done: list[int]):
        """(in-flight row, decide's result, error) for each job.  May run again
        from the start when the store is busy, so it changes no job.

        Every read is decided from one read snapshot, without the write lock:
        most wake-ups find nothing new (another reader was first).  The write
        transaction then only moves cursors by compare-and-swap; a read whose
        cursor another reader moved meanwhile is decided again under the lock.
        Few statements under the lock matter more than their cost: each one
        hands the GIL to another thread and waits to get it back."""
        outcomes: list = [None] * len(jobs)
        planned: dict[int, tuple[int, Cursor, Cursor, object]] = {}  # i -> pid, old, new, result
        pids: dict[int, int] = {}
        db.execute("BEGIN")
        try:
            orphaned = self._orphaned(db)
            heads = self._heads(db, jobs)
            for i, job in enumerate(jobs):
                pid, cursor, head = heads[i]
                if pid is None:
                    outcomes[i] = (None, None, PipeGone(job.name))
                    continue
                pids[i] = pid
                if (pid, job.group) in orphaned:
                    continue  # a dead daemon's reads come first: under the lock
                if cursor is not None and (head is None or head < cursor.offset):
                    fetched = Fetched(cursor, [])
                else:
                    fetched = self._records(db, pid, cursor or Cursor(), job.max_bytes,
                                            lazy=True)
                outcomes[i], move = _plan(job, fetched)
                if move is not None:
                    planned[i] = (pid, *move)
        finally:
            db.execute("COMMIT")
        again = [i for i in pids if outcomes[i] is None and i not in planned]
        if not planned and not again and not done:
            return outcomes
        with _transaction(db):
            self._delete_inflight(db, done)
            for i, (pid, old, new, result) in planned.items():
                if self._move(db, pid, jobs[i].group, old, new):
                    outcomes[i] = (self._take_inflight(db, pid, jobs[i].group, old, new),
                                   result, None)
                else:
                    again.append(i)
            for i in sorted(again):
                job, pid = jobs[i], pids[i]
                try:
                    redelivered = self._redeliver(db, pid, job.group, job.decide)
                except sqlite3.Error:
                    raise
                except Exception as e:  # noqa: BLE001 - decide failed: nothing moved
                    outcomes[i] = (None, None, e)
                    continue
                if redelivered is not None:
                    outcomes[i] = (*redelivered, None)
                    continue
                outcomes[i], move = _plan(job, self._fetch(db, pid, job.group, job.max_bytes,
                                                           lazy=True))
                if move is not None:  # under the lock the cursor is as read: this move holds
                    old, new, result = move
                    self._move(db, pid, job.group, old, new)
                    outcomes[i] = (self._take_inflight(db, pid, job.group, old, new), result,
                                   None)
        return outcomes

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
                pid, nxt, pos, sessions, head = rows[n]
                cursor = None if nxt is None else Cursor(nxt, pos, _sessions_set(sessions))
                out.append((pid, cursor, head))
        return out

    def _orphaned(self, db: sqlite3.Connection) -> set[tuple[int, str]]:
        """(pipe, group) with bytes in flight from a daemon that died."""
        return {(pipe, grp) for pipe, grp, owner, taken in db.execute(
            "SELECT pipe, grp, owner, max(taken) FROM inflight WHERE owner != ?"
            " GROUP BY pipe, grp, owner", (self._owner,))
            if not self._owner_alive(owner, taken)}

    def _take_inflight(self, db: sqlite3.Connection, pid: int, group: str,
                       start: Cursor, end: Cursor) -> int:
        return db.execute(
            "INSERT INTO inflight (pipe, grp, owner, taken, first, first_pos, last, last_pos)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (pid, group, self._owner, time.time(), start.offset, start.byte_pos,
             end.offset, end.byte_pos),
        ).lastrowid

    @staticmethod
    def _delete_inflight(db: sqlite3.Connection, rows: Sequence[int]) -> None:
        if rows:
            db.executemany("DELETE FROM inflight WHERE id = ?", [(r,) for r in rows])

    def _redeliver(self, db: sqlite3.Connection, pid: int, group: str, decide):
        """Deliver the data of the oldest in-flight range of a dead owner, if
        any: (new in-flight row, decide's result), else None."""
        orphans = db.execute(
            "SELECT id, owner, taken, first, first_pos, last, last_pos FROM inflight"
            " WHERE pipe = ? AND grp = ? AND owner != ? ORDER BY first, first_pos",
            (pid, group, self._owner)).fetchall()
        for rowid, owner, taken, first, first_pos, last, last_pos in orphans:
            if self._owner_alive(owner, taken):
                continue
            records = []
            for rid, session, data in db.execute(
                "SELECT id, session, data FROM data.records WHERE pipe = ? AND kind = 'data'"
                " AND id >= ? AND id <= ? ORDER BY id", (pid, first, last)):
                start = first_pos if rid == first else 0
                end = last_pos if rid == last else len(data)
                if end > start:
                    records.append(StoredRecord(rid, Kind.DATA, session, data[start:end],
                                                start, end))
            if not records:
                self._delete_inflight(db, [rowid])
                continue
            # The range's markers were consumed with it: its sessions count as
            # open, so only its bytes come out again, never an EOF.
            at = Cursor(first, first_pos, frozenset(r.session for r in records if r.session))
            new, result = decide(Fetched(at, records))
            if new == at:
                return None, result
            log.warning("delivering again bytes read by a daemon that died (%s)", owner)
            if (new.offset, new.byte_pos) >= (last, last_pos) or new.offset > records[-1].offset:
                self._delete_inflight(db, [rowid])
            else:
                db.execute("UPDATE inflight SET first = ?, first_pos = ? WHERE id = ?",
                           (new.offset, new.byte_pos, rowid))
            return self._take_inflight(db, pid, group, at, new), result
        return None

    def _owner_alive(self, owner: str, taken: float) -> bool:
        now = time.monotonic()
        known = self._alive.get(owner)
        if known and now - known[1] < 1.0:
            return known[0]
        namespace, _, rest = owner.partition(" ")
        if namespace == self._namespace:
            pid, _, started = rest.partition(" ")
            alive = _process_identity(pid) == started
        else:  # another PID namespace: its processes cannot be seen from here
            alive = time.time() - taken < ORPHAN_AGE
        self._alive[owner] = (alive, now)
        return alive

    async def _acknowledge(self) -> None:
        done, self._delivered = self._delivered, []
        if not done:
            return

        def ack(db: sqlite3.Connection) -> None:
            with _transaction(db):
                self._delete_inflight(db, done)

        try:
            await self._reader.run(ack)
        except BaseException:
            self._delivered[:0] = done
            raise

    async def _ack_loop(self) -> None:
        """Acknowledge the last reads when no further read comes to do it."""
        while True:
            await trio.sleep(ACK_INTERVAL)
            try:
                await self._acknowledge()
            except StoreError as e:
                if self._closed:
                    return
                log.warning("acknowledging reads: %s", e)
                await trio.sleep(1)

    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        def commit(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                return self._move(db, _pipe_id(db, name), group, expected, new)

        return await self._reader.run(commit)

    async def delete_group(self, name: str, group: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                pid = _pipe_id(db, name)
                db.execute("DELETE FROM inflight WHERE pipe = ? AND grp = ?", (pid, group))
                return db.execute(
                    "DELETE FROM groups WHERE pipe = ? AND name = ?", (pid, group)
                ).rowcount == 1

        return await self._meta.run(delete)

    # -- liveness ----------------------------------------------------------
    tracks_liveness = True  # one host, one clock: wall-clock heartbeats compare

    async def heartbeat(self, mount_id: str) -> None:
        now = time.time()

        def beat(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute("INSERT OR REPLACE INTO mounts (id, seen) VALUES (?, ?)",
                           (mount_id, now))
                # Forget mounts silent for a day: their sessions ended long ago.
                db.execute("DELETE FROM mounts WHERE seen < ?", (now - 86400,))

        await self._meta.run(beat)

    async def mount_ages(self) -> dict[str, float]:
        now = time.time()
        rows = await self._meta.run(lambda db: db.execute("SELECT id, seen FROM mounts").fetchall())
        return {mount: max(0.0, now - seen) for mount, seen in rows}

    # -- status ------------------------------------------------------------
    async def stats(self, name: str) -> PipeStats:
        def stats(db: sqlite3.Connection) -> PipeStats:
            db.execute("BEGIN")
            try:
                pid = _pipe_id(db, name)
                records, size = db.execute(
                    "SELECT count(*), coalesce(sum(length(data)), 0) FROM data.records"
                    " WHERE pipe = ? AND kind = 'data'", (pid,)).fetchone()
                groups = {}
                for group, next_id, pos in db.execute(
                    "SELECT name, next, pos FROM groups WHERE pipe = ?", (pid,)
                ).fetchall():
                    count, left = db.execute(
                        "SELECT count(*), coalesce(sum(length(data)), 0) FROM data.records"
                        " WHERE pipe = ? AND id >= ? AND kind = 'data'", (pid, next_id)).fetchone()
                    groups[group] = GroupStats(count, max(0, left - pos))
                return PipeStats(records, size, groups)
            finally:
                db.execute("COMMIT")

        return await self._meta.run(stats)

    async def health(self) -> str:
        try:
            await self._meta.run(lambda db: db.execute("SELECT 1 FROM pipes LIMIT 1").fetchall())
        except StoreError as e:
            return str(e)
        return "ok"

    # -- background --------------------------------------------------------
    def _changes(self, db: sqlite3.Connection) -> dict[str, bool]:
        """Pipes created or deleted (True) or appended to (False) since the
        last call: a look at the pipes table's signature, and only the
        records added since."""
        changed: dict[str, bool] = {}
        signature = db.execute("SELECT count(*), max(id), total(id) FROM pipes").fetchone()
        if signature != self._pipes_signature:
            names = dict(db.execute("SELECT id, name FROM pipes").fetchall())
            changed |= dict.fromkeys(set(names.values()) ^ set(self._pipe_names.values()), True)
            self._pipe_names, self._pipes_signature = names, signature
        for pipe, newest in db.execute(
                # NOT INDEXED: a range of ids, not a scan of the (pipe, id) index.
                "SELECT pipe, max(id) FROM data.records NOT INDEXED WHERE id > ? GROUP BY pipe",
                (self._newest,)).fetchall():
            self._newest = max(self._newest, newest)
            if pipe in self._pipe_names:
                changed.setdefault(self._pipe_names[pipe], False)
        return changed

    async def _watch_changes(self) -> None:
        """Notice what other daemons sharing the store did: new records, new or
        deleted pipes.  Our own appends notify directly."""
        version = None

        def look(db: sqlite3.Connection) -> dict[str, bool]:
            # One thread hop per look: it runs every poll_interval.
            nonlocal version
            now = (db.execute("PRAGMA main.data_version").fetchone()[0],
                   db.execute("PRAGMA data.data_version").fetchone()[0])
            if now == version:
                return {}
            changed = self._changes(db)
            version = now  # only once the changes were read: a failure looks again
            return changed

        orphans_checked = 0.0
        while True:
            try:
                for name, gone in (await self._watch.run(look)).items():
                    self._on_change(name, gone)
                if time.monotonic() - orphans_checked > 1.0:
                    orphans_checked = time.monotonic()
                    await self._wake_for_orphans()
            except Exception as e:  # noqa: BLE001 - keep watching whatever happened
                if self._closed:
                    return
                log.warning("change watch: %s", e)
                await trio.sleep(1)
            await trio.sleep(self.poll_interval)

    async def _wake_for_orphans(self) -> None:
        """Readers already blocked must notice bytes a dead daemon left in flight."""
        rows = await self._watch.run(lambda db: db.execute(
            "SELECT p.name, i.owner, max(i.taken) FROM inflight i JOIN pipes p ON p.id = i.pipe"
            " WHERE i.owner != ? GROUP BY p.name, i.owner", (self._owner,)).fetchall())
        for name, owner, taken in rows:
            if not self._owner_alive(owner, taken):
                self._on_change(name)

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(self.retention_interval)
            try:
                began = time.monotonic()
                removed = await self.apply_retention()
                if removed:
                    log.info("retention removed %d records in %.2fs", removed,
                             time.monotonic() - began)
            except Exception as e:  # noqa: BLE001
                if self._closed:
                    return
                log.warning("retention: %s", e)

    async def apply_retention(self) -> int:
        """Remove records every group has consumed, and records older than the
        retention age, in short transactions: one transaction for all pipes
        held the one write lock long enough to stall every reader and writer
        of the store (docs/reliability.md, load).

        Records of all pipes interleave in id order, so consumed records are
        first removed as one id range below the oldest record any group
        still needs (each page rewritten once), and only the rest pipe by
        pipe (each row on its own page)."""
        cutoff = time.time() - self.retention_seconds

        def plan(db: sqlite3.Connection):
            db.execute("BEGIN")
            try:
                # A range in flight may have to be delivered again: keep it.
                floors = db.execute(
                    "SELECT pipe, min(next) FROM (SELECT pipe, next FROM groups"
                    " UNION ALL SELECT pipe, first FROM inflight) GROUP BY pipe").fetchall()
                oldest, newest = db.execute(
                    "SELECT min(id), max(id) FROM data.records").fetchone()
                needed = db.execute(
                    "WITH f(pipe, floor) AS (SELECT pipe, min(next) FROM (SELECT pipe, next"
                    " FROM groups UNION ALL SELECT pipe, first FROM inflight) GROUP BY pipe)"
                    " SELECT min((SELECT min(r.id) FROM data.records r WHERE r.pipe = p.id"
                    " AND r.id >= coalesce(f.floor, 0))) FROM pipes p"
                    " LEFT JOIN f ON f.pipe = p.id").fetchone()[0]
            finally:
                db.execute("COMMIT")
            return floors, oldest, newest, needed

        def prune_range(db: sqlite3.Connection, low: int, high: int) -> int:
            with _transaction(db):
                return db.execute("DELETE FROM data.records WHERE id >= ? AND id < ?",
                                  (low, high)).rowcount

        def prune_pipes(db: sqlite3.Connection, chunk: list[tuple[int, int]], low: int) -> int:
            with _transaction(db):
                return sum(db.execute(
                    "DELETE FROM data.records WHERE pipe = ? AND id >= ? AND id < ?",
                    (pipe, low, floor)).rowcount for pipe, floor in chunk)

        def prune_old(db: sqlite3.Connection) -> int:
            with _transaction(db):
                return db.execute("DELETE FROM data.records WHERE ts < ?", (cutoff,)).rowcount

        floors, oldest, newest, needed = await self._meta.run(plan)
        if oldest is None:
            return 0
        below = newest + 1 if needed is None else needed
        removed = 0
        for low in range(oldest, below, _RETENTION_IDS):
            high = min(low + _RETENTION_IDS, below)
            removed += await self._meta.run(lambda db: prune_range(db, low, high))
        rest = [(pipe, floor) for pipe, floor in floors if floor > below]
        for at in range(0, len(rest), _RETENTION_PIPES):
            chunk = rest[at:at + _RETENTION_PIPES]
            removed += await self._meta.run(lambda db: prune_pipes(db, chunk, below))
        return removed + await self._meta.run(prune_old)

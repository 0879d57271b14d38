"""The embedded store: one SQLite file that any number of daemons on one host share.

Why SQLite: it is in the standard library, its WAL mode lets several processes
(two containers sharing a volume) append and read concurrently, and a commit
is atomic, so a group cursor moves by compare-and-swap across processes.

Each connection is used by one thread at a time (a CapacityLimiter of 1), so
the trio loop never waits on the disk.  Every commit uses WAL with
synchronous=NORMAL: atomic, and it survives kill -9 of the daemon (the
frames are in the page cache).  A durable append (close, fsync, O_SYNC) then
fsyncs the WAL file, which makes every earlier commit durable as well; bulk
writes pay one sync per close instead of one per batch.  Cursor moves are
never synced: after a power cut a few bytes may be delivered again, which
at-least-once allows.

Other daemons' commits are noticed by polling ``PRAGMA data_version``, which
costs one page-cache read; ``poll_interval`` bounds the added latency.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import trio

from ..errors import PipeGone, StoreError
from ..model import Cursor, Kind, Record, StoredRecord
from ..names import DEFAULT_GROUP
from .base import Backend, ChangeCallback, Fetched, GroupStats, PipeStats

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pipes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name    TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
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
"""

_KINDS = {k.value: k for k in Kind}
_MAX_FETCH_RECORDS = 4096


def default_store_path() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/dnpfs/store.sqlite")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "dnpfs" / "store.sqlite"


def _sessions_text(sessions: frozenset[str]) -> str:
    return ",".join(sorted(sessions))


def _sessions_set(text: str) -> frozenset[str]:
    return frozenset(text.split(",")) if text else frozenset()


class _Conn:
    """One sqlite3 connection, used from one worker thread at a time."""

    def __init__(self, path: Path, synchronous: str, busy_ms: int) -> None:
        self.db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(f"PRAGMA busy_timeout={busy_ms}")
        self.limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[[sqlite3.Connection], T], abandon: bool = False) -> T:
        """Run *fn* in a worker thread.  *abandon*: a cancelled caller stops
        waiting while the thread finishes on its own (the connection stays
        reserved until then) — only for work whose late success harms no one."""
        def call() -> T:
            try:
                return fn(self.db)
            except sqlite3.Error as e:
                if self.db.in_transaction:
                    self.db.rollback()
                raise StoreError(f"embedded store: {e}") from e

        return await trio.to_thread.run_sync(call, limiter=self.limiter,
                                             abandon_on_cancel=abandon)


def _transaction(db: sqlite3.Connection):
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front, so a
    read-then-write transaction never fails half way on a lock upgrade."""
    return _Tx(db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.rollback()


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

    # -- lifecycle ---------------------------------------------------------
    def check(self) -> None:
        """Create the store if needed, or raise StoreError with one readable
        line.  Synchronous and connection-free, so the CLI can call it before
        it forks into the background."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab"):  # says why (read-only, permission) better than sqlite
                pass
        except OSError as e:
            raise StoreError(f"cannot use store {self.path}: {e.strerror}") from e
        try:
            probe = sqlite3.connect(self.path, timeout=self.busy_ms / 1000)
            try:
                # Records are up to 1 MiB (one FUSE write): large pages mean
                # 16 WAL frames per record instead of 256.  Only takes effect
                # on a new store, before WAL mode is set.
                probe.execute("PRAGMA page_size=65536")
                probe.execute("PRAGMA journal_mode=WAL")
                probe.executescript(SCHEMA)
            finally:
                probe.close()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot use store {self.path}: {e}") from e

    async def start(self, nursery: trio.Nursery, on_change: ChangeCallback) -> None:
        self.check()
        self._writer = _Conn(self.path, "NORMAL", self.busy_ms)
        self._reader = _Conn(self.path, "NORMAL", self.busy_ms)
        self._meta = _Conn(self.path, "NORMAL", self.busy_ms)
        self._watch = _Conn(self.path, "NORMAL", self.busy_ms)
        self._on_change = on_change
        self._heads = await self._watch.run(self._read_heads)
        nursery.start_soon(self._watch_changes)
        nursery.start_soon(self._retention_loop)

    async def close(self) -> None:
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
        self._on_change(name)
        return created

    async def delete_pipe(self, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                try:
                    pid = _pipe_id(db, name)
                except PipeGone:
                    return False
                db.execute("DELETE FROM records WHERE pipe = ?", (pid,))
                db.execute("DELETE FROM groups WHERE pipe = ?", (pid,))
                db.execute("DELETE FROM pipes WHERE id = ?", (pid,))
                return True

        deleted = await self._meta.run(delete)
        self._on_change(name)
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
        now = time.time()

        def append(db: sqlite3.Connection) -> None:
            if records:
                with _transaction(db):
                    pid = _pipe_id(db, name)
                    db.executemany(
                        "INSERT INTO records (pipe, kind, session, ts, data)"
                        " VALUES (?, ?, ?, ?, ?)",
                        [(pid, r.kind.value, r.session, now, r.data) for r in records],
                    )
            if durable:
                # Committed frames sit in the WAL file; syncing it makes every
                # earlier commit durable too (a checkpoint syncs on its own).
                self._sync_wal()

        # Abandoned on cancel (the delivery timeout): the records may still
        # be stored later, which at-least-once allows; a consume is never abandoned.
        await self._writer.run(append, abandon=True)
        if records:
            self._on_change(name)

    def _sync_wal(self) -> None:
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed: the main file was synced
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
                row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
                return (row[0] if row else 0) + 1

        return await self._reader.run(attach)

    async def detach(self, name: str, group: str) -> None:
        pass  # groups are rows; nothing is held per mount

    @staticmethod
    def _fetch(db: sqlite3.Connection, name: str, group: str, max_bytes: int) -> tuple[int, Fetched]:
        """The group's cursor and the records from it; call inside a transaction."""
        pid = _pipe_id(db, name)
        row = db.execute(
            "SELECT next, pos, sessions FROM groups WHERE pipe = ? AND name = ?", (pid, group)
        ).fetchone()
        cursor = Cursor(row[0], row[1], _sessions_set(row[2])) if row else Cursor()
        records: list[StoredRecord] = []
        budget = max_bytes
        # substr() reads only the part of a large record a read can use.
        rows = db.execute(
            "SELECT id, kind, session, length(data),"
            " substr(data, CASE WHEN id = ? THEN ? ELSE 1 END, ?)"
            " FROM records WHERE pipe = ? AND id >= ? ORDER BY id LIMIT ?",
            (cursor.offset, cursor.byte_pos + 1, max_bytes, pid, cursor.offset,
             _MAX_FETCH_RECORDS),
        )
        for rid, kind, session, size, data in rows:
            start = cursor.byte_pos if rid == cursor.offset else 0
            data = data or b""  # substr() of an empty blob is NULL
            records.append(StoredRecord(rid, _KINDS[kind], session, data, start, size))
            budget -= len(data)
            if budget <= 0:
                break
        return pid, Fetched(cursor, records)

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
                return self._fetch(db, name, group, max_bytes)[1]
            finally:
                db.execute("COMMIT")

        return await self._reader.run(fetch)

    async def consume(self, name, group, max_bytes, decide):
        # One transaction and one thread hop per read, instead of two of each.
        def consume(db: sqlite3.Connection):
            with _transaction(db):
                pid, fetched = self._fetch(db, name, group, max_bytes)
                new, result = decide(fetched)
                if new != fetched.cursor:
                    self._move(db, pid, group, fetched.cursor, new)
                return result

        return await self._reader.run(consume)

    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        def commit(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                return self._move(db, _pipe_id(db, name), group, expected, new)

        return await self._reader.run(commit)

    async def delete_group(self, name: str, group: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                pid = _pipe_id(db, name)
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
                    "SELECT count(*), coalesce(sum(length(data)), 0) FROM records"
                    " WHERE pipe = ? AND kind = 'data'", (pid,)).fetchone()
                groups = {}
                for group, next_id, pos in db.execute(
                    "SELECT name, next, pos FROM groups WHERE pipe = ?", (pid,)
                ).fetchall():
                    count, left = db.execute(
                        "SELECT count(*), coalesce(sum(length(data)), 0) FROM records"
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
    @staticmethod
    def _read_heads(db: sqlite3.Connection) -> dict[str, int | None]:
        return dict(
            db.execute(
                "SELECT p.name, (SELECT max(id) FROM records r WHERE r.pipe = p.id) FROM pipes p"
            ).fetchall()
        )

    async def _watch_changes(self) -> None:
        """Notice what other daemons sharing the file did: new records, new or
        deleted pipes.  Our own appends notify directly."""
        version = None
        while True:
            try:
                now = await self._watch.run(
                    lambda db: db.execute("PRAGMA data_version").fetchone()[0]
                )
                if now != version:
                    version = now
                    heads = await self._watch.run(self._read_heads)
                    for name in heads.keys() | self._heads.keys():
                        if heads.get(name, -1) != self._heads.get(name, -1):
                            self._on_change(name)
                    self._heads = heads
            except Exception as e:  # noqa: BLE001 - keep watching whatever happened
                log.warning("change watch: %s", e)
                await trio.sleep(1)
            await trio.sleep(self.poll_interval)

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(self.retention_interval)
            try:
                removed = await self.apply_retention()
                if removed:
                    log.info("retention removed %d records", removed)
            except Exception as e:  # noqa: BLE001
                log.warning("retention: %s", e)

    async def apply_retention(self) -> int:
        """Remove records every group has consumed, and records older than the
        retention age."""
        cutoff = time.time() - self.retention_seconds

        def prune(db: sqlite3.Connection) -> int:
            with _transaction(db):
                removed = db.execute("DELETE FROM records WHERE ts < ?", (cutoff,)).rowcount
                floors = db.execute("SELECT pipe, min(next) FROM groups GROUP BY pipe").fetchall()
                for pipe, floor in floors:
                    removed += db.execute(
                        "DELETE FROM records WHERE pipe = ? AND id < ?", (pipe, floor)
                    ).rowcount
                return removed

        return await self._writer.run(prune)

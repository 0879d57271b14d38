"""A connection, the worker thread it runs in, and waiting out a busy store.

Each connection is used by one thread at a time (a CapacityLimiter of 1).
Work runs in a worker thread, so the trio loop never waits on a lock or the
disk; or, when the caller says it is short (``inline``), on the loop itself
while the store is free: it never waits there either, since SQLite answers
busy at once (no busy timeout) and the work then runs again in the thread.
Every commit uses WAL with synchronous=NORMAL: atomic, and it survives kill
-9 of the daemon (the frames are in the page cache).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from ...errors import NoSuchPipe, StoreError
from ._schema import records_path

T = TypeVar("T")
log = logging.getLogger(__name__)
# Runs of a connection between two checkpoints (SQLite's automatic ones
# would run inside a commit, perhaps on the loop).  A transaction here
# writes a few 4 KiB pages: SQLite's default of 1,000 pages is of that order.
CHECKPOINT_EVERY = 256
# Work begun within this long of the same kind of work's end is part of a
# stream (appends, reads): its callers ask for no ``inline``, so it goes to
# the thread, and the work arriving during the hop makes one batch.
STREAM_GAP = 0.001
_BUSY, _LOCKED = 5, 6  # SQLite's primary result codes


def _busy(e: sqlite3.Error) -> bool:
    return (getattr(e, "sqlite_errorcode", 0) & 0xFF) in (_BUSY, _LOCKED)


class _Busy(Exception):
    """The store is busy while work runs on the loop: run it in the thread."""


_on_loop = threading.local()  # .active: work runs on the trio loop, it must not wait


def retry_busy(fn: Callable[[], T], seconds: float, on_busy: Callable[[], None] = lambda: None) -> T:
    """fn(), again while SQLite says busy or locked, for up to *seconds*.

    No busy timeout in SQLite: its busy handler sleeps 1, 2, 5, 10 ... 100 ms
    while another daemon holds the write lock for well under a millisecond;
    two daemons under load spent most of their time asleep there (7 ms per
    wait, measured).  Short sleeps here instead.  Any other error, or busy
    past the deadline, is raised as it is.  *on_busy* runs before each retry."""
    deadline = time.monotonic() + seconds
    pause = 0.0002
    while True:
        try:
            return fn()
        except sqlite3.Error as e:
            if not _busy(e) or time.monotonic() > deadline:
                raise
            if getattr(_on_loop, "active", False):
                raise _Busy() from e
            on_busy()
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


class Conn:
    """One sqlite3 connection, used from one worker thread at a time."""

    def __init__(self, path: Path, synchronous: str, busy_ms: int) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                  timeout=0)
        self.busy_seconds = busy_ms / 1000
        # Busy-retried like all later work: another daemon starting on the
        # same store at once holds its locks for a moment ("database is
        # locked" at mount, seen with two daemons mounting an old store).
        retry_busy(lambda: self.db.execute("ATTACH DATABASE ? AS data",
                                           (str(records_path(path)),)), self.busy_seconds)
        for schema in ("main", "data"):
            for pragma in (f"PRAGMA {schema}.journal_mode=WAL",
                           f"PRAGMA {schema}.synchronous={synchronous}",
                           # A checkpoint syncs the files: never on the loop.
                           # Conn.run checkpoints in the thread instead
                           # (CHECKPOINT_EVERY).
                           f"PRAGMA {schema}.wal_autocheckpoint=0"):
                retry_busy(lambda pragma=pragma: self.db.execute(pragma), self.busy_seconds)
        self.limiter = trio.CapacityLimiter(1)
        self._runs = 0  # since the last checkpoint

    async def run(self, fn: Callable[[sqlite3.Connection], T], abandon: bool = False,
                  inline: bool = False) -> T:
        """Run *fn* (one transaction: it may run again when the store was
        busy) in a worker thread.  *abandon*: a cancelled caller stops
        waiting while the thread finishes on its own (the connection stays
        reserved until then) — only for work whose late success harms no one.
        *inline*: *fn* is short (no large copies); it runs on the loop when
        the connection and the store are free, in the thread otherwise."""
        if inline:
            ran, result = self.run_here(fn)
            if ran:
                return result
            # Not run: again in the thread, where waiting is allowed.
        else:
            self._runs += 1
        return await trio.to_thread.run_sync(self._call, fn, self.busy_seconds,
                                             limiter=self.limiter, abandon_on_cancel=abandon)

    def run_here(self, fn: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        """(True, *fn*'s result) if it ran on the loop now: the connection
        free, the store answering at once, no checkpoint due; else (False,
        None), with nothing done (rolled back).  StoreError as run()."""
        self._runs += 1
        if self._runs >= CHECKPOINT_EVERY:
            return False, None
        try:
            self.limiter.acquire_nowait()
        except trio.WouldBlock:
            return False, None  # the thread has the connection
        try:
            _on_loop.active = True
            return True, self._call(fn, self.busy_seconds)
        except _Busy:
            return False, None  # rolled back
        finally:
            _on_loop.active = False
            self.limiter.release()

    def _call(self, fn: Callable[[sqlite3.Connection], T], seconds: float) -> T:
        try:
            result = retry_busy(lambda: fn(self.db), seconds, self._rollback)
        except _Busy:
            self._rollback()
            raise
        except sqlite3.Error as e:
            self._rollback()
            raise StoreError(f"embedded store: {e}") from e
        if self._runs >= CHECKPOINT_EVERY and not getattr(_on_loop, "active", False):
            self._runs = 0
            try:
                for schema in ("main", "data"):
                    # PASSIVE: copies what no reader still needs, waits for no one.
                    self.db.execute(f"PRAGMA {schema}.wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as e:
                log.debug("checkpoint: %s", e)  # the next one catches up
        return result

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.rollback()
        except sqlite3.ProgrammingError:
            pass  # the connection is closed: nothing to roll back


# A statement that writes nothing but takes the write lock of its file.
_LOCK = {"main": "DELETE FROM main.mounts WHERE 0", "data": "DELETE FROM data.boot WHERE 0"}


class transaction:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front, so a
    read-then-write transaction never fails half way on a lock upgrade.

    BEGIN IMMEDIATE takes the write lock of every attached file: the
    catalog's and the records'.  A transaction that writes one file only
    names it (*only*: "main", the catalog, or "data", the records) and
    takes that file's lock alone, so that cursor moves and appends do not
    wait for each other (an append holds its lock while it copies its
    batch into the segments); it reads the other file from a snapshot."""

    def __init__(self, db: sqlite3.Connection, only: str | None = None) -> None:
        self.db = db
        self.only = only

    def __enter__(self) -> sqlite3.Connection:
        # Wait for the write lock here, briefly, rather than in Conn.run,
        # which would run the whole function again (a batch of reads first
        # decides from a read snapshot: that work is still good).
        if self.only is None:
            retry_busy(lambda: self.db.execute("BEGIN IMMEDIATE"), 0.5)
        else:
            retry_busy(self._begin_only, 0.5)
        return self.db

    def _begin_only(self) -> None:
        self.db.execute("BEGIN")
        try:
            self.db.execute(_LOCK[self.only])  # no read before it: no stale snapshot
        except BaseException:
            self.db.rollback()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.rollback()


def pipe_id(db: sqlite3.Connection, name: str) -> int:
    """The row id of pipe *name*; NoSuchPipe if there is none."""
    row = db.execute("SELECT id FROM pipes WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NoSuchPipe(name)
    return row[0]

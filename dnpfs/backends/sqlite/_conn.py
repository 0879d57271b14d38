"""A connection, the worker thread it runs in, and waiting out a busy store.

Each connection is used by one thread at a time (a CapacityLimiter of 1), so
the trio loop never waits on the disk.  Every commit uses WAL with
synchronous=NORMAL: atomic, and it survives kill -9 of the daemon (the
frames are in the page cache).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from ...errors import NoSuchPipe, StoreError
from ._schema import records_path

T = TypeVar("T")
_BUSY, _LOCKED = 5, 6  # SQLite's primary result codes


def _busy(e: sqlite3.Error) -> bool:
    return (getattr(e, "sqlite_errorcode", 0) & 0xFF) in (_BUSY, _LOCKED)


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
            on_busy()
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


class Conn:
    """One sqlite3 connection, used from one worker thread at a time."""

    def __init__(self, path: Path, synchronous: str, busy_ms: int) -> None:
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
            try:
                return retry_busy(lambda: fn(self.db), self.busy_seconds, self._rollback)
            except sqlite3.Error as e:
                self._rollback()
                raise StoreError(f"embedded store: {e}") from e

        return await trio.to_thread.run_sync(call, limiter=self.limiter,
                                             abandon_on_cancel=abandon)

    def _rollback(self) -> None:
        try:
            if self.db.in_transaction:
                self.db.rollback()
        except sqlite3.ProgrammingError:
            pass  # the connection is closed: nothing to roll back


class transaction:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front, so a
    read-then-write transaction never fails half way on a lock upgrade."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        # Wait for the write lock here, briefly, rather than in Conn.run,
        # which would run the whole function again (a batch of reads first
        # decides from a read snapshot: that work is still good).
        retry_busy(lambda: self.db.execute("BEGIN IMMEDIATE"), 0.5)
        return self.db

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

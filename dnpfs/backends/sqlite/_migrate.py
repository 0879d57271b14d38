"""Moving a store of the previous layout to segment files, once, at mount.

The previous release (up to commit 1142c2b) kept each record's bytes in a
``data`` column of the records file.  A store of that layout is moved in
place, so that an upgrade keeps every pipe, record, cursor, read in flight
and set-aside record (docs/decisions.md, "Upgrades keep the store"):

1. Under an exclusive flock of the segments folder: a second daemon of this
   release waits there, then finds the store moved.  A daemon of any release
   that has the store open (an old one would go on writing into ``data``)
   makes the move refuse with one line: SQLite's WAL mode keeps a shared
   lock on a byte of the ``-shm`` file for as long as a connection is open,
   and F_GETLK names a process holding it.  (A daemon that opens the store
   after that look waits for the write lock below, and its next append after
   the move fails loudly: the ``data`` column is gone.)
2. Under the records file's write lock (BEGIN IMMEDIATE): every record's
   bytes are written to its pipe's segments, as appends would have written
   them, and synced with the folder.  Record ids are kept, so the cursors,
   in-flight ranges and set-aside records in the catalog, which name records
   by id and byte offset, stay as they are.
3. One transaction of the records file swaps the old table for the index,
   with marks saying the segments are synced.

A kill at any point before that commit leaves the old layout, and segment
files no row names: the next mount removes them and starts over.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...access import FileAccess
from ...errors import StoreError
from ._segments import SEGMENT_BYTES, SegmentFiles, _parse, segments_path

log = logging.getLogger(__name__)

# Where SQLite's unix VFS keeps the "dead man switch" lock in a -shm file
# (os_unix.c: UNIX_SHM_BASE + SQLITE_SHM_NLOCK): every open WAL connection
# holds a shared lock on it.
_SHM_DMS_BYTE = 128
_FLUSH_BYTES = 8 << 20
PAGE_SIZE = 4096  # SQLite's default, which a new store's records file has  # bytes gathered before one write to a segment


def is_old(records: sqlite3.Connection) -> bool:
    """The previous layout: record bytes in the records table."""
    return "data" in {row[1] for row in records.execute("PRAGMA table_info(records)")}


@contextmanager
def exclusive(store: Path) -> Iterator[None]:
    """Only one process checks or moves the store's layout at a time."""
    fd = os.open(segments_path(store), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _user_of(db_file: Path) -> int | None:
    """The pid of another process with *db_file* open (0 if in another PID
    namespace), or None.  Call with no connection of ours to it open: closing
    our descriptor of the -shm file would drop our own SQLite locks on it."""
    try:
        fd = os.open(f"{db_file}-shm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # the last connection removed it: no one has the file open
    try:
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, _SHM_DMS_BYTE, 1, 0)
        kind, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


def migrate(store: Path, records_file: Path, access: FileAccess, busy_ms: int) -> str:
    """Move the records of the previous layout into segment files (the
    module doc); call under ``exclusive``.  Returns the line to log."""
    for file in (store, records_file):
        pid = _user_of(file)
        if pid is not None:
            raise StoreError(
                f"cannot use store {store}: it was made by an earlier dnpfs and is moved to"
                f" segment files at the first mount, but another process"
                f" ({f'pid {pid}' if pid else 'in another PID namespace'}) has it open:"
                f" stop every dnpfs daemon using it, then mount again")
    started = time.monotonic()
    db = sqlite3.connect(records_file, isolation_level=None, timeout=busy_ms / 1000)
    segments = SegmentFiles(store, access)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            if not is_old(db):  # moved meanwhile (cannot happen under the flock)
                db.execute("ROLLBACK")
                return ""
            _remove_leftovers(segments)
            rows, ends, pipes, total = _write_segments(db, segments)
            for pipe, seg in ends:
                segments.sync(pipe, seg)
            segments.sync_dir()
            _swap_tables(db, rows, ends)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
                _remove_leftovers(segments)  # a full disk gets its space back
            raise
        # The old bytes' pages are free now: give the space back, in the
        # pages of a new store (the old file's were 64 KiB, and each commit
        # of the index would write whole pages to the WAL).  Not part of the
        # move: a kill here leaves a moved store, larger on disk.  SQLite
        # changes the page size only outside WAL mode.
        try:
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            db.execute("VACUUM")
        except sqlite3.Error as e:  # someone opened the store meanwhile: it still works
            log.warning("store %s: moved to segment files, but not compacted: %s", store, e)
        db.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.Error) as e:
        raise StoreError(f"cannot use store {store}: moving it to segment files failed: {e}") from e
    finally:
        segments.close()
        db.close()
    return (f"store {store}: made by an earlier dnpfs, moved to segment files: {pipes} pipes,"
            f" {len(rows)} records, {total} bytes in {time.monotonic() - started:.2f} s")


def _remove_leftovers(segments: SegmentFiles) -> None:
    """Segment files of a move killed before its commit: no row names them."""
    for name in os.listdir(segments.dir):
        parsed = _parse(name)
        if parsed is not None:
            segments.remove(*parsed)


def _write_segments(db: sqlite3.Connection, segments: SegmentFiles):
    """Each pipe's records into its segments, laid out as ``_appends`` lays
    them out (a segment named by its first record's id, a new one once
    SEGMENT_BYTES are in it).  Returns the index rows, the segments' ends,
    and how many pipes and bytes."""
    rows: list[tuple] = []
    ends: dict[tuple[int, int], int] = {}
    pipes: set[int] = set()
    total = 0
    chunks: list[bytes] = []
    at = (0, 0, 0)  # (pipe, segment, position) where the gathered chunks go
    pipe = seg = None
    pos = 0

    def flush() -> None:
        if chunks:
            segments.write(*at, chunks)
            chunks.clear()

    for rid, rpipe, kind, session, ts, data in db.execute(
            "SELECT id, pipe, kind, session, ts, data FROM records ORDER BY pipe, id"):
        data = bytes(data)
        if rpipe != pipe or pos >= SEGMENT_BYTES:
            flush()
            pipe, seg, pos = rpipe, rid, 0
            pipes.add(pipe)
        if not chunks:
            at = (pipe, seg, pos)
        rows.append((rid, pipe, kind, session, ts, seg, pos, len(data)))
        if data:
            chunks.append(data)
            pos += len(data)
            total += len(data)
            ends[pipe, seg] = pos
            if pos - at[2] >= _FLUSH_BYTES:
                flush()
    flush()
    return rows, ends, len(pipes), total


def _swap_tables(db: sqlite3.Connection, rows: list[tuple],
                 ends: dict[tuple[int, int], int]) -> None:
    from ._schema import RECORDS_SCHEMA

    seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
    db.execute("DROP INDEX IF EXISTS records_by_pipe")
    db.execute("DROP INDEX IF EXISTS records_by_age")
    db.execute("ALTER TABLE records RENAME TO records_before_segments")
    statement = ""
    for line in RECORDS_SCHEMA.splitlines(keepends=True):  # executescript would commit
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    db.executemany("INSERT INTO records (id, pipe, kind, session, ts, seg, pos, size)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("DROP TABLE records_before_segments")
    if seq is not None:
        # Ids are never given twice: cursors may point past the last record
        # (every record read and removed by retention).
        db.execute("DELETE FROM sqlite_sequence WHERE name = 'records'")
        db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('records', ?)", seq)
    # Synced above: a power cut after the first start must not drop them (_segments).
    db.executemany("INSERT INTO synced (pipe, seg, upto) VALUES (?, ?, ?)",
                   [(p, s, upto) for (p, s), upto in ends.items()])

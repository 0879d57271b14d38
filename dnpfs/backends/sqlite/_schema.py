"""The store's two files and their tables; making or checking them."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ...access import FileAccess
from ...errors import StoreError
from ...model import Kind
from . import _migrate
from ._segments import segments_path
from ._wake import bells_path

# Two files: the index of the records (their bytes are in segment files:
# _segments), and the catalog (pipes, cursors, reads in flight, heartbeats).
# Two, because SQLite has one write lock per file: appends and cursor moves
# then wait for each other only in the rare transaction that writes both.
# A transaction that writes one file is atomic; only deleting a pipe writes
# both (a crash in between leaves unreachable records that retention removes).
RECORDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    pipe    INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    session TEXT,
    ts      REAL NOT NULL,
    seg     INTEGER NOT NULL,  -- the segment file (_segments) holding its bytes
    pos     INTEGER NOT NULL,  -- where they start there
    size    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_pipe ON records (pipe, id);
CREATE INDEX IF NOT EXISTS records_by_age ON records (ts);
-- How far each segment is known to be on disk (_segments: a durable append
-- syncs, then marks); the boot the store was last opened in.
CREATE TABLE IF NOT EXISTS synced (
    pipe INTEGER NOT NULL,
    seg  INTEGER NOT NULL,
    upto INTEGER NOT NULL,
    PRIMARY KEY (pipe, seg)
);
CREATE TABLE IF NOT EXISTS boot (id TEXT NOT NULL);
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
    last_pos  INTEGER NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1  -- times this range went out
);
CREATE INDEX IF NOT EXISTS inflight_by_group ON inflight (pipe, grp);
-- Bytes that went out MAX_DELIVERIES times without being done (docs/semantics.md)
CREATE TABLE IF NOT EXISTS aside (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    pipe       INTEGER NOT NULL,
    grp        TEXT NOT NULL,
    record     INTEGER NOT NULL,
    start      INTEGER NOT NULL,
    session    TEXT,
    deliveries INTEGER NOT NULL,
    at         REAL NOT NULL,
    data       BLOB NOT NULL
);
"""

KINDS = {k.value: k for k in Kind.stored()}


def default_store_path() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/dnpfs/store.sqlite")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "dnpfs" / "store.sqlite"


def records_path(store: Path) -> Path:
    """The file beside the catalog that holds the index of a store's records."""
    return store.with_name(store.name + ".records")


def sessions_text(sessions: frozenset[str]) -> str:
    return ",".join(sorted(sessions))


def sessions_set(text: str) -> frozenset[str]:
    return frozenset(text.split(",")) if text else frozenset()


def prepare(path: Path, access: FileAccess, busy_ms: int) -> str | None:
    """Create the store if needed, or raise StoreError with one readable
    line.  Synchronous and connection-free, so the CLI can call it before
    it forks into the background.  A store of the previous layout is moved
    to segment files (_migrate): returns the line to log about it."""
    try:
        access.make_dirs(path.parent)
        for folder in (segments_path(path), bells_path(path)):
            access.make_dirs(folder)
            access.restrict_folder(folder)  # the bytes themselves are in segments
        for file in (path, records_path(path)):
            # Made here, not by sqlite: says why (read-only, permission)
            # better, and with the mode sqlite then gives -wal and -shm.
            access.create(file)
            for suffix in ("-wal", "-shm"):
                access.restrict(file.with_name(file.name + suffix))
    except OSError as e:
        raise StoreError(f"cannot use store {path}: {e.strerror}") from e
    migrated = None
    try:
        with _migrate.exclusive(path):
            probe = sqlite3.connect(records_path(path), timeout=busy_ms / 1000)
            try:
                old = _migrate.is_old(probe)
            finally:
                probe.close()
            if old:
                migrated = _migrate.migrate(path, records_path(path), access, busy_ms)
        for file, schema in ((path, CATALOG_SCHEMA), (records_path(path), RECORDS_SCHEMA)):
            probe = sqlite3.connect(file, timeout=busy_ms / 1000)
            try:
                probe.execute("PRAGMA journal_mode=WAL")
                probe.executescript(schema)
                if file == path and "deliveries" not in {
                        row[1] for row in probe.execute("PRAGMA table_info(inflight)")}:
                    # A store made before delivery counts: its ranges went out once.
                    probe.execute("ALTER TABLE inflight ADD COLUMN deliveries"
                                  " INTEGER NOT NULL DEFAULT 1")
                if file == path and probe.execute(
                        "SELECT 1 FROM sqlite_master WHERE name = 'records'").fetchone():
                    raise StoreError(f"cannot use store {path}: it was made by an"
                                     " earlier dnpfs (records inside the catalog file);"
                                     " start a new store")
            finally:
                probe.close()
    except (OSError, sqlite3.Error) as e:
        raise StoreError(f"cannot use store {path}: {e}") from e
    return migrated or None

"""Upkeep of the store: retention, mount heartbeats, stats and health."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

import trio

from ...errors import StoreError
from ..base import GroupStats, PipeStats
from ._conn import Conn, pipe_id, transaction
from ._segments import SegmentFiles

log = logging.getLogger(__name__)
_RETENTION_IDS = 2000  # record ids pruned per transaction
_RETENTION_PIPES = 10  # pipes pruned per transaction


class Upkeep:
    """The catalog connection's background and status work."""

    def __init__(self, conn: Conn, segments: SegmentFiles, retention_seconds: float,
                 retention_interval: float, closed: Callable[[], bool]) -> None:
        self._meta = conn
        self.segments = segments
        self.retention_seconds = retention_seconds
        self.retention_interval = retention_interval
        self.closed = closed

    # -- liveness (the Liveness capability) ---------------------------------
    # One host, one clock: wall-clock heartbeats of different mounts compare.
    async def heartbeat(self, mount_id: str) -> None:
        now = time.time()

        def beat(db: sqlite3.Connection) -> None:
            with transaction(db):
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
                pipe = pipe_id(db, name)
                records, size = db.execute(
                    "SELECT count(*), coalesce(sum(size), 0) FROM data.records"
                    " WHERE pipe = ? AND kind = 'data'", (pipe,)).fetchone()
                groups = {}
                for group, next_id, pos in db.execute(
                    "SELECT name, next, pos FROM groups WHERE pipe = ?", (pipe,)
                ).fetchall():
                    count, left = db.execute(
                        "SELECT count(*), coalesce(sum(size), 0) FROM data.records"
                        " WHERE pipe = ? AND id >= ? AND kind = 'data'", (pipe, next_id)).fetchone()
                    redelivered, = db.execute(
                        "SELECT count(*) FROM inflight WHERE pipe = ? AND grp = ?"
                        " AND deliveries > 1", (pipe, group)).fetchone()
                    aside, = db.execute("SELECT count(*) FROM aside WHERE pipe = ? AND grp = ?",
                                        (pipe, group)).fetchone()
                    groups[group] = GroupStats(count, max(0, left - pos), redelivered, aside)
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

    # -- retention ---------------------------------------------------------
    async def retention_loop(self) -> None:
        while True:
            await trio.sleep(self.retention_interval)
            try:
                began = time.monotonic()
                removed = await self.apply_retention()
                if removed:
                    log.info("retention removed %d records in %.2fs", removed,
                             time.monotonic() - began)
            except Exception as e:  # noqa: BLE001
                if self.closed():
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
            with transaction(db):
                return db.execute("DELETE FROM data.records WHERE id >= ? AND id < ?",
                                  (low, high)).rowcount

        def prune_pipes(db: sqlite3.Connection, chunk: list[tuple[int, int]], low: int) -> int:
            with transaction(db):
                return sum(db.execute(
                    "DELETE FROM data.records WHERE pipe = ? AND id >= ? AND id < ?",
                    (pipe, low, floor)).rowcount for pipe, floor in chunk)

        def prune_old(db: sqlite3.Connection) -> int:
            with transaction(db):
                return db.execute("DELETE FROM data.records WHERE ts < ?", (cutoff,)).rowcount

        floors, oldest, newest, needed = await self._meta.run(plan)
        if oldest is None:
            await self.tidy()
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
        removed += await self._meta.run(prune_old)
        await self.tidy()
        return removed

    async def tidy(self) -> None:
        """Remove the segment files no index row names any more, under the
        write lock (_segments)."""
        def tidy(db: sqlite3.Connection) -> None:
            with transaction(db):
                self.segments.tidy(db)

        await self._meta.run(tidy)

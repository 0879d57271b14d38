"""``SqliteBackend``: the embedded store's facade over its parts (see __init__).

Why SQLite: it is in the standard library, its WAL mode lets several processes
(two containers sharing a volume) append and read concurrently, and a commit
is atomic, so a group cursor moves by compare-and-swap across processes.
SQLite holds the catalog and the records' index; the records' bytes are in
segment files beside it (``_segments``), written once and read with pread.

Four connections, each in its own worker thread (short work after a pause
runs on the loop instead: ``_conn``): appends (writer), reads and cursors
(reader), the catalog and upkeep (meta), and change watching (watch).
Cursor moves are never synced: after a power cut a few bytes may be
delivered again, which at-least-once allows.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from ...access import FileAccess
from ...errors import NoSuchPipe, StoreError
from ...model import Cursor, Held, Record
from ...names import DEFAULT_GROUP
from ..base import Backend, ChangeCallback, Fetched, PipeStats
from ._appends import Appends
from ._conn import Conn, pipe_id, transaction
from ._inflight import InFlight
from ._reads import Reads
from ._schema import default_store_path, prepare
from ._segments import SegmentFiles
from ._upkeep import Upkeep
from ._wake import Wake
from ._watch import ChangeWatch

log = logging.getLogger(__name__)


class SqliteBackend(Backend):
    """The store contract, plus Liveness (heartbeats), Holds (as in-flight
    ranges: _inflight) and apply_retention."""

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        access: FileAccess = FileAccess(),
        retention_seconds: float = 7 * 24 * 3600,
        retention_interval: float = 30.0,
        poll_interval: float = 0.005,
        busy_ms: int = 30_000,
    ) -> None:
        self.path = Path(path) if path else default_store_path()
        self.access = access  # who may read the store's files (access.py)
        self.retention_seconds = retention_seconds
        self.retention_interval = retention_interval
        self.poll_interval = poll_interval
        self.busy_ms = busy_ms
        self.description = f"sqlite:{self.path}"
        self._on_change: ChangeCallback = lambda name, gone=False: None
        self._inflight = InFlight()
        self._closed = False
        self._migrated: str | None = None  # the line about a store moved to segments

    # -- lifecycle ---------------------------------------------------------
    def check(self) -> None:
        """Create the store if needed, or raise StoreError with one readable
        line.  Synchronous and connection-free, so the CLI can call it before
        it forks into the background."""
        # Logged by start(): the CLI checks before the daemon's log is set up.
        self._migrated = prepare(self.path, self.access, self.busy_ms) or self._migrated

    async def start(self, nursery: trio.Nursery, on_change: ChangeCallback) -> None:
        self.check()
        if self._migrated:
            log.info("%s", self._migrated)
        self._inflight.start()
        self._on_change = on_change
        closed = lambda: self._closed  # noqa: E731 - background loops then end quietly
        self._conns = [Conn(self.path, "NORMAL", self.busy_ms) for _ in range(4)]
        writer, reader, self._meta, watch = self._conns
        self._wake = Wake(self.path, self.access)
        # One set of open segment files per connection: each runs in one thread.
        self._segments = [SegmentFiles(self.path, self.access) for _ in range(3)]
        self._appends = Appends(writer, self.path, self._segments[0],
                                lambda name: self._on_change(name), self._wake.ring)
        self._reads = Reads(reader, self._inflight, self._segments[1])
        self._upkeep = Upkeep(self._meta, self._segments[2], self.retention_seconds,
                              self.retention_interval, closed)
        await self._upkeep.tidy()  # what a killed daemon wrote and never indexed
        self._watch = ChangeWatch(watch, self._inflight, self._wake, self.poll_interval, closed)
        await self._watch.start()
        nursery.start_soon(self._watch.run, on_change)
        nursery.start_soon(self._upkeep.retention_loop)
        nursery.start_soon(self._inflight.ack_loop, reader, closed)
        nursery.start_soon(self._appends.loop)
        nursery.start_soon(self._reads.loop)

    async def close(self) -> None:
        try:
            # A clean stop leaves nothing to deliver again: readers' jobs
            # still open count as done (their processes have their bytes).
            for holder in list(self._inflight.holders):
                self._inflight.settle(holder)
            await self._inflight.acknowledge(self._reads.conn)
        except StoreError as e:
            log.warning("acknowledging reads at close: %s", e)
        self._closed = True  # background loops now end quietly
        for conn, segments in zip(self._conns, [*self._segments, None]):
            await conn.run(lambda db: db.close())
            if segments is not None:
                await conn.run(lambda db: segments.close())
        self._wake.close()

    # -- pipes -------------------------------------------------------------
    async def create_pipe(self, name: str) -> bool:
        def create(db: sqlite3.Connection) -> bool:
            with transaction(db):
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
        if created:
            self._wake.ring()
        self._on_change(name, True)
        return created

    async def delete_pipe(self, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> int | None:
            with transaction(db):
                try:
                    pipe = pipe_id(db, name)
                except NoSuchPipe:
                    return None
                db.execute("DELETE FROM data.records WHERE pipe = ?", (pipe,))
                db.execute("DELETE FROM data.synced WHERE pipe = ?", (pipe,))
                db.execute("DELETE FROM groups WHERE pipe = ?", (pipe,))
                db.execute("DELETE FROM inflight WHERE pipe = ?", (pipe,))
                db.execute("DELETE FROM aside WHERE pipe = ?", (pipe,))
                db.execute("DELETE FROM pipes WHERE id = ?", (pipe,))
                return pipe

        deleted = await self._meta.run(delete)
        if deleted is not None:
            # After the commit: no append can find the pipe, and its id is
            # never given again, so no one writes its segments any more.
            await self._meta.run(lambda db: self._segments[2].remove_pipe(deleted))
            self._wake.forget(name)
            self._wake.ring()
        self._on_change(name, True)
        return deleted is not None

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
        await self._appends.append(name, records, durable)

    # -- reader groups -----------------------------------------------------
    async def attach(self, name: str, group: str) -> int:
        return await self._reads.attach(name, group)

    async def detach(self, name: str, group: str) -> None:
        pass  # groups are rows; nothing is held per mount

    async def fetch(self, name: str, group: str, max_bytes: int) -> Fetched:
        return await self._reads.fetch(name, group, max_bytes)

    async def consume(self, name, group, max_bytes, decide, blocking=False):
        # Batched, in flight until the reply is written: _reads and _inflight.
        return await self._reads.consume(name, group, max_bytes, decide)

    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        return await self._reads.commit(name, group, expected, new)

    # -- holds (the Holds capability) ---------------------------------------
    def holds(self, name: str, group: str) -> bool:
        return True  # every group

    async def consume_held(self, holder, name, group, max_bytes, decide, blocking=False):
        return await self._reads.consume(name, group, max_bytes, decide, holder)

    async def given_back(self, name: str, group: str) -> bool:
        def look(db: sqlite3.Connection) -> bool:
            return (pipe_id(db, name), group) in self._inflight.orphaned(db)

        return await self._reads.conn.run(look)

    async def set_aside(self, name: str, group: str) -> list[Held]:
        def aside(db: sqlite3.Connection) -> list[Held]:
            return [Held(*row) for row in db.execute(
                "SELECT record, start, session, data, deliveries FROM aside"
                " WHERE pipe = ? AND grp = ? ORDER BY id", (pipe_id(db, name), group))]

        return await self._meta.run(aside)

    def settle(self, holder: object) -> None:
        self._inflight.settle(holder)  # deleted by the next read or the ack loop

    async def give_back(self, name: str, group: str, holder: object,
                        since: tuple[int, int] | None) -> None:
        rows = self._inflight.holders.pop(holder, [])
        if not rows:
            return

        def give_back(db: sqlite3.Connection) -> None:
            with transaction(db):
                self._inflight.give_back(db, rows, since)

        await self._reads.conn.run(give_back)
        self._on_change(name)  # this mount's readers; the watch wakes the others'

    async def delete_group(self, name: str, group: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            with transaction(db):
                pipe = pipe_id(db, name)
                db.execute("DELETE FROM inflight WHERE pipe = ? AND grp = ?", (pipe, group))
                db.execute("DELETE FROM aside WHERE pipe = ? AND grp = ?", (pipe, group))
                return db.execute(
                    "DELETE FROM groups WHERE pipe = ? AND name = ?", (pipe, group)
                ).rowcount == 1

        return await self._meta.run(delete)

    # -- liveness (the Liveness capability), status, retention ---------------
    async def heartbeat(self, mount_id: str) -> None:
        await self._upkeep.heartbeat(mount_id)

    async def mount_ages(self) -> dict[str, float]:
        return await self._upkeep.mount_ages()

    async def stats(self, name: str) -> PipeStats:
        return await self._upkeep.stats(name)

    async def health(self) -> str:
        return await self._upkeep.health()

    async def apply_retention(self) -> int:
        return await self._upkeep.apply_retention()

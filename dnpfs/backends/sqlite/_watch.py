"""Noticing what other daemons sharing the store did: new records, new or
deleted pipes, reads left in flight by a daemon that died.

A pipe's bell (``_wake``) names the pipe: its readers are woken at once,
with no look at the store.  The catalog's bell, and the safety poll, make
the watch look: ``PRAGMA data_version`` tells whether anything changed, at
the cost of one page-cache read, and then which pipes.  Without bells (no
inotify) the watch polls every ``poll_interval``; with them, every
``SAFETY_POLL`` in case a ring was missed (a daemon of an older dnpfs).
Our own appends notify directly too (``_appends``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

import trio

from ..base import ChangeCallback
from ._conn import Conn
from ._inflight import InFlight
from ._wake import Wake

log = logging.getLogger(__name__)

SAFETY_POLL = 0.1


class ChangeWatch:
    def __init__(self, conn: Conn, inflight: InFlight, wake: Wake, poll_interval: float,
                 closed: Callable[[], bool]) -> None:
        self.conn = conn
        self.inflight = inflight
        self.wake = wake
        self.poll_interval = SAFETY_POLL if wake.available else poll_interval
        self.closed = closed
        self._pipe_names: dict[int, str] = {}  # pipe id -> name, as last seen
        self._pipes_signature = None
        self._newest = 0  # the newest record id seen

    async def start(self) -> None:
        """Take the store as it is now: only later changes are reported."""
        self._newest = await self.conn.run(
            lambda db: db.execute("SELECT coalesce(max(id), 0) FROM data.records").fetchone()[0])
        await self.conn.run(self._changes)

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

    async def run(self, on_change: ChangeCallback) -> None:
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
                for name, gone in (await self.conn.run(look)).items():
                    on_change(name, gone)
                if time.monotonic() - orphans_checked > 1.0:
                    orphans_checked = time.monotonic()
                    await self._wake_for_orphans(on_change)
            except Exception as e:  # noqa: BLE001 - keep watching whatever happened
                if self.closed():
                    return
                log.warning("change watch: %s", e)
                await trio.sleep(1)
            await self._listen(on_change)

    async def _listen(self, on_change: ChangeCallback) -> None:
        """Wake the readers of every pipe whose bell rings, until the
        catalog's bell rings or the next poll is due."""
        look_at = time.monotonic() + self.poll_interval
        while (left := look_at - time.monotonic()) > 0:
            rung = await self.wake.wait(left)
            for name in rung.pipes:
                on_change(name)
            if rung.catalog:
                return

    async def _wake_for_orphans(self, on_change: ChangeCallback) -> None:
        """Readers already blocked must notice bytes a dead daemon left in flight."""
        owner = self.inflight.owner
        rows = await self.conn.run(lambda db: db.execute(
            "SELECT p.name, i.owner, max(i.taken) FROM inflight i JOIN pipes p ON p.id = i.pipe"
            " WHERE i.owner != ? GROUP BY p.name, i.owner", (owner,)).fetchall())
        for name, other, taken in rows:
            if not self.inflight.owner_alive(other, taken):
                on_change(name)

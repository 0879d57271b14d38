"""Reads in flight, and delivering them again when their daemon died.

A read moves the group's cursor before the kernel has the reply, so a daemon
killed in between would lose those bytes.  Each cursor move is therefore also
written as an *in-flight* range owned by this daemon, and deleted once the
reply is surely written (see ``Reads.consume``).  Ranges of a dead owner are
delivered again, first, to the group's next reader: at least once.

A reader handle's reads (the Holds capability) stay in flight longer: until
the handle settles them (its job is done: its next read, or a close), even
after their replies are written.  A handle that gives them back (its process
was killed, or it closed part way through a record) hands them to
``RETURNED``, an owner that is always dead, so the group's next read on any
mount delivers them first.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from ...errors import StoreError
from ...model import Cursor, Kind, StoredRecord
from ..base import MAX_DELIVERIES, Fetched
from ._conn import Conn, transaction
from ._segments import SegmentFiles

log = logging.getLogger(__name__)

# An in-flight range whose owner cannot be checked (another PID namespace,
# another container) is presumed dead when unacknowledged for this long; a
# live owner acknowledges within ACK_INTERVAL.
ORPHAN_AGE = 30.0
ACK_INTERVAL = 0.1
RETURNED = "returned"  # the owner of ranges given back: never alive


def process_identity(pid: int | str) -> str | None:
    """The start time of process *pid* (field 22 of /proc/PID/stat), which
    tells a live process from a later one that reused its pid; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def owner_token() -> str:
    """Who owns an in-flight range: PID namespace, pid and start time."""
    return f"{os.readlink('/proc/self/ns/pid')} {os.getpid()} {process_identity('self')}"


class InFlight:
    """This daemon's reads in flight, and the look at other owners' ranges."""

    def __init__(self) -> None:
        # Taken in start(), in the process that serves the mount (`dnpfs
        # mount` forks; its parent exits at once).
        self.owner = ""
        self._namespace = ""
        self.delivered: list[int] = []  # in-flight rows done with: to delete
        self.holders: dict[object, list[int]] = {}  # a reader handle's rows, until it settles
        self._alive: dict[str, tuple[bool, float]] = {}  # owner -> (alive, checked at)

    def start(self) -> None:
        self.owner = owner_token()
        self._namespace = self.owner.split(" ")[0]

    def owner_alive(self, owner: str, taken: float) -> bool:
        if owner == RETURNED:
            return False
        now = time.monotonic()
        known = self._alive.get(owner)
        if known and now - known[1] < 1.0:
            return known[0]
        namespace, _, rest = owner.partition(" ")
        if namespace == self._namespace:
            pid, _, started = rest.partition(" ")
            alive = process_identity(pid) == started
        else:  # another PID namespace: its processes cannot be seen from here
            alive = time.time() - taken < ORPHAN_AGE
        self._alive[owner] = (alive, now)
        return alive

    def orphaned(self, db: sqlite3.Connection) -> set[tuple[int, str]]:
        """(pipe id, group) with bytes in flight from a daemon that died."""
        return {(pipe_id, grp) for pipe_id, grp, owner, taken in db.execute(
            "SELECT pipe, grp, owner, max(taken) FROM inflight WHERE owner != ?"
            " GROUP BY pipe, grp, owner", (self.owner,))
            if not self.owner_alive(owner, taken)}

    def take(self, db: sqlite3.Connection, pipe_id: int, group: str,
             start: Cursor, end: Cursor, deliveries: int = 1) -> int:
        return db.execute(
            "INSERT INTO inflight (pipe, grp, owner, taken, first, first_pos, last, last_pos,"
            " deliveries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (pipe_id, group, self.owner, time.time(), start.offset, start.byte_pos,
             end.offset, end.byte_pos, deliveries),
        ).lastrowid

    def settle(self, holder: object) -> None:
        self.delivered.extend(self.holders.pop(holder, ()))

    @staticmethod
    def give_back(db: sqlite3.Connection, rows: Sequence[int],
                  since: tuple[int, int] | None) -> None:
        """Rows to RETURNED; with *since*, only their bytes from there on."""
        for row in rows:
            found = db.execute("SELECT first, first_pos, last, last_pos FROM inflight"
                               " WHERE id = ?", (row,)).fetchone()
            if found is None:
                continue
            first = tuple(found[:2])
            if since is not None:
                if tuple(found[2:]) <= since:
                    db.execute("DELETE FROM inflight WHERE id = ?", (row,))
                    continue
                first = max(first, since)
            db.execute("UPDATE inflight SET owner = ?, first = ?, first_pos = ? WHERE id = ?",
                       (RETURNED, *first, row))

    @staticmethod
    def delete(db: sqlite3.Connection, rows: Sequence[int]) -> None:
        if rows:
            db.executemany("DELETE FROM inflight WHERE id = ?", [(r,) for r in rows])

    def redeliver(self, db: sqlite3.Connection, segments: SegmentFiles, pipe_id: int,
                  group: str, decide):
        """Deliver the data of the oldest in-flight range of a dead owner, if
        any: (new in-flight row, decide's result), else None."""
        orphans = db.execute(
            "SELECT id, owner, taken, first, first_pos, last, last_pos, deliveries FROM inflight"
            " WHERE pipe = ? AND grp = ? AND owner != ? ORDER BY first, first_pos",
            (pipe_id, group, self.owner)).fetchall()
        for rowid, owner, taken, first, first_pos, last, last_pos, deliveries in orphans:
            if self.owner_alive(owner, taken):
                continue
            records = []
            for rid, session, seg, pos, size in db.execute(
                "SELECT id, session, seg, pos, size FROM data.records WHERE pipe = ?"
                " AND kind = 'data' AND id >= ? AND id <= ? ORDER BY id",
                    (pipe_id, first, last)):
                start = first_pos if rid == first else 0
                end = last_pos if rid == last else size
                if end > start:
                    data = segments.read(pipe_id, seg, pos + start, end - start)
                    kind = Kind.DATA if data is not None else Kind.UNREADABLE
                    records.append(StoredRecord(rid, kind, session, data or b"", start, end))
            if not records:
                self.delete(db, [rowid])
                continue
            if deliveries >= MAX_DELIVERIES:
                log.warning("set aside %d bytes of pipe %d group %r: they went out %d times"
                            " and were not done", sum(len(r.data) for r in records), pipe_id,
                            group, deliveries)
                db.executemany(
                    "INSERT INTO aside (pipe, grp, record, start, session, deliveries, at, data)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(pipe_id, group, r.offset, r.start, r.session, deliveries, time.time(),
                      r.data) for r in records])
                self.delete(db, [rowid])
                continue
            # The range's markers were consumed with it: its sessions count as
            # open, so only its bytes come out again, never an EOF.
            at = Cursor(first, first_pos, frozenset(r.session for r in records if r.session))
            new, result = decide(Fetched(at, records))
            if new == at:
                return None, result
            if owner == RETURNED:
                log.debug("delivering the rest of a record a reader gave back")
            else:
                log.warning("delivering again bytes read by a daemon that died (%s)", owner)
            if (new.offset, new.byte_pos) >= (last, last_pos) or new.offset > records[-1].offset:
                self.delete(db, [rowid])
            else:
                db.execute("UPDATE inflight SET first = ?, first_pos = ? WHERE id = ?",
                           (new.offset, new.byte_pos, rowid))
            return self.take(db, pipe_id, group, at, new, deliveries + 1), result
        return None

    async def acknowledge(self, conn: Conn) -> None:
        """Delete the ranges whose read replies are written."""
        done, self.delivered = self.delivered, []
        if not done:
            return

        def ack(db: sqlite3.Connection) -> None:
            with transaction(db, only="main"):
                self.delete(db, done)

        try:
            await conn.run(ack)
        except BaseException:
            self.delivered[:0] = done
            raise

    async def ack_loop(self, conn: Conn, closed) -> None:
        """Acknowledge the last reads when no further read comes to do it."""
        while True:
            await trio.sleep(ACK_INTERVAL)
            try:
                await self.acknowledge(conn)
            except StoreError as e:
                if closed():
                    return
                log.warning("acknowledging reads: %s", e)
                await trio.sleep(1)

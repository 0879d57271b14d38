"""Which writer sessions were open at a point of a pipe: the EOF rule for a
share group.

``delivery.take`` ends a reader's stream at an END marker that leaves no
session open, which a consumer group knows from the markers its cursor
walked in order.  A member of a share group sees only the records it was
handed, so it cannot tell; the log can.  A ``Ledger`` reads the pipe's
markers in order (a plain Fetch, from the oldest retained record on, and
then on from where it stopped: each record once per mount) and notes, at
each END marker, the sessions open just before it.  The share reader asks
for the END it acquired (``open_at``) and hands ``delivery.take`` that
set as the cursor's open sessions: the rule itself is not written twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

from aiokafka.protocol.fetch import FetchRequest

from ...model import Kind
from . import wire
from ._records import Unreadable, read_records

log = logging.getLogger(__name__)

READ_COMMITTED = 1
FETCH_BYTES = 4 << 20
KEPT = 10_000  # notes of END markers not asked for yet (acquired by other mounts)
OFFSET_OUT_OF_RANGE = 1


class Ledger:
    def __init__(self, cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.topic = cluster.topic(name)
        self.next: int | None = None  # the first offset not read yet
        self.open: set[str] = set()
        self._ends: OrderedDict[int, frozenset[str]] = OrderedDict()
        self._target = -1
        self._waiters: list[Callable[[str], None]] = []
        self._task: asyncio.Task | None = None

    def open_at(self, offset: int, peek: bool = False) -> frozenset[str] | None:
        """The sessions open just before the END marker (its own among them if
        it was open) at *offset*; None
        while the ledger has not read that far (``want`` it)."""
        if self.next is None or offset >= self.next:
            return None
        if peek:
            return self._ends.get(offset, frozenset())
        return self._ends.pop(offset, frozenset())

    def want(self, offset: int, notify: Callable[[str], None]) -> None:
        """Read up to *offset*, then ``notify(name)``."""
        self._target = max(self._target, offset)
        self._waiters.append(notify)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read(), name=f"ledger {self.topic}")

    async def catch_up(self) -> frozenset[str]:
        """Read to the log's end; the sessions open there."""
        end = await self.cluster.catalog.end_offset(self.name)
        if end > 0 and (self.next is None or end > self.next):
            self.want(end - 1, lambda name: None)
            await asyncio.shield(self._task)
        return frozenset(self.open)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _read(self) -> None:
        while True:
            try:
                if self.next is None:
                    self.next = await self.cluster.catalog.list_offset(self.name, -2)
                while self.next <= self._target:
                    await self._read_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the broker is away: try again
                log.info("%s: reading session markers: %s", self.name, e)
                await asyncio.sleep(0.5)
                continue
            break
        waiters, self._waiters = self._waiters, []
        for notify in dict.fromkeys(waiters):
            notify(self.name)

    async def _read_once(self) -> None:
        leader = self.cluster.catalog.leader(self.topic)
        if leader < 0:
            self.cluster.catalog.stale_leaders()
            raise RuntimeError("no partition leader known")
        response = await self.cluster.client.send(leader, FetchRequest(
            0, 1, FETCH_BYTES, READ_COMMITTED, [(self.topic, [(0, self.next, FETCH_BYTES)])]))
        for _, partitions in response.topics:
            for part in partitions:
                code, raw = part[1], part[-1]
                if code == OFFSET_OUT_OF_RANGE:  # retention passed us: go on from the start
                    self.next = await self.cluster.catalog.list_offset(self.name, -2)
                    return
                if code:
                    self.cluster.catalog.stale_leaders()
                    raise RuntimeError(f"Fetch error {code}")
                records, after = read_records(memoryview(raw or b""), self.next)
                for r in records:
                    if not isinstance(r, Unreadable):
                        self._note(wire.decode_record(r.offset, r.value, r.headers))
                if after <= self.next:
                    raise RuntimeError("no progress reading the log")
                self.next = after

    def _note(self, rec) -> None:
        if rec.session is None:
            return
        if rec.kind is Kind.END:
            self._ends[rec.offset] = frozenset(self.open)
            self.open.discard(rec.session)
            while len(self._ends) > KEPT:
                self._ends.popitem(last=False)
        else:  # BEGIN, or data of a session whose BEGIN retention removed
            self.open.add(rec.session)

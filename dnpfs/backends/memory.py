"""The in-memory store: the reference for the store contract (base.py).

Every rule of the contract is written here once, plainly, with nothing else
in the way (no threads, no files, no broker): where SQLite or Kafka seem to
disagree with it, tests/contract/ says which is wrong.  It is also the fast
store under the tests of the layers above (tests/unit/test_fs_api.py): a
whole filesystem, without FUSE.

Several backends may share one ``MemoryStore``: each stands for a mount, with
its own change callback, as two daemons share an SQLite file.  Records live
as long as the store object; nothing survives the process.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from ..errors import NoSuchPipe, StoreError
from ..model import Cursor, Held, Kind, Record, StoredRecord
from ..names import DEFAULT_GROUP
from .base import MAX_DELIVERIES, Backend, ChangeCallback, Fetched, GroupStats, PipeStats


@dataclass
class _Pipe:
    records: list[tuple[StoredRecord, float]] = field(default_factory=list)  # (record, stored at)
    end: int = 0  # the next record's offset
    # The default group exists from the start, so records written before any
    # reader came are kept for it (retention removes what every group has read).
    groups: dict[str, Cursor] = field(default_factory=lambda: {DEFAULT_GROUP: Cursor()})
    # Rests of records given back by the handles that held them (Holds), per
    # group, in pipe order: delivered before the group's cursor.
    returned: dict[str, list[Held]] = field(default_factory=dict)
    aside: dict[str, list[Held]] = field(default_factory=dict)  # after MAX_DELIVERIES


@dataclass
class MemoryStore:
    """What every mount of one in-memory store shares."""

    pipes: dict[str, _Pipe] = field(default_factory=dict)
    mounts: dict[str, float] = field(default_factory=dict)  # mount id -> last heartbeat
    backends: list[MemoryBackend] = field(default_factory=list)  # started, not closed

    def notify(self, name: str, gone: bool = False) -> None:
        for backend in list(self.backends):
            backend._on_change(name, gone)


class MemoryBackend(Backend):
    """One mount's view of a MemoryStore.  Offers Liveness (one clock) and
    Holds (nothing dies without its store: a hold needs no keeping)."""

    def __init__(self, store: MemoryStore | None = None, *,
                 max_record_size: int = 1 << 30,
                 retention_seconds: float = 7 * 24 * 3600) -> None:
        self.store = store if store is not None else MemoryStore()
        self.max_record_size = max_record_size
        self.retention_seconds = retention_seconds
        self.description = "memory"
        self._on_change: ChangeCallback = lambda name, gone=False: None
        self._open = False
        # Holds: a holder's reads, (pipe, group, from, to, times they went out)
        self._taken: dict[object, list[tuple[str, str, Cursor, Cursor, int]]] = {}

    # -- lifecycle ---------------------------------------------------------
    async def start(self, nursery: trio.Nursery, on_change: ChangeCallback) -> None:
        self._on_change = on_change
        self._open = True
        self.store.backends.append(self)

    async def close(self) -> None:
        self._open = False
        if self in self.store.backends:
            self.store.backends.remove(self)

    async def _enter(self) -> None:
        """Every operation: a checkpoint first (other tasks run between any
        two calls, as they would around a thread or a broker), then refuse
        work on a closed store as the others do."""
        await trio.lowlevel.checkpoint()
        if not self._open:
            raise StoreError("memory store: closed")

    def _pipe(self, name: str) -> _Pipe:
        pipe = self.store.pipes.get(name)
        if pipe is None:
            raise NoSuchPipe(name)
        return pipe

    # -- pipes -------------------------------------------------------------
    async def create_pipe(self, name: str) -> bool:
        await self._enter()
        if name in self.store.pipes:
            return False
        self.store.pipes[name] = _Pipe()
        self.store.notify(name, True)
        return True

    async def delete_pipe(self, name: str) -> bool:
        await self._enter()
        if self.store.pipes.pop(name, None) is None:
            return False
        self.store.notify(name, True)
        return True

    async def list_pipes(self) -> list[str]:
        await self._enter()
        return sorted(self.store.pipes)

    async def pipe_exists(self, name: str) -> bool:
        await self._enter()
        return name in self.store.pipes

    # -- records -----------------------------------------------------------
    async def append(self, name: str, records: Sequence[Record], durable: bool = True) -> None:
        await self._enter()
        pipe = self._pipe(name)
        too_big = [r for r in records if len(r.data) > self.max_record_size]
        if too_big:  # all or nothing, as one transaction
            raise StoreError(f"record of {len(too_big[0].data)} bytes is over the limit of"
                             f" {self.max_record_size}")
        now = time.time()
        for r in records:
            pipe.records.append((StoredRecord(pipe.end, r.kind, r.session, r.data,
                                              0, len(r.data)), now))
            pipe.end += 1
        if records:
            self.store.notify(name)

    # -- reader groups -----------------------------------------------------
    async def attach(self, name: str, group: str) -> int:
        await self._enter()
        pipe = self._pipe(name)
        pipe.groups.setdefault(group, Cursor())
        return pipe.end

    async def detach(self, name: str, group: str) -> None:
        await self._enter()  # groups are shared state; nothing is held per mount

    async def fetch(self, name: str, group: str, max_bytes: int) -> Fetched:
        await self._enter()
        pipe = self._pipe(name)
        cursor = pipe.groups.get(group, Cursor())
        out: list[StoredRecord] = []
        budget = max_bytes
        for record, _ in pipe.records:
            if record.offset < cursor.offset:
                continue
            # Only the part a read can use: from the cursor's byte on, at most
            # max_bytes of each record (a store need not return more).
            start = cursor.byte_pos if record.offset == cursor.offset else 0
            data = record.data[start:start + max_bytes]
            out.append(StoredRecord(record.offset, record.kind, record.session, data,
                                    start, len(record.data)))
            budget -= len(data)
            if budget <= 0:
                break
        return Fetched(cursor, out)

    async def consume(self, name, group, max_bytes, decide, blocking=False):
        return (await self._consume(name, group, max_bytes, decide, blocking))[1]

    async def _consume(self, name, group, max_bytes, decide, blocking):
        """(the cursors moved from and to and the times those bytes went
        out, or None; decide's result)."""
        await self._enter()
        returned = self._pipe(name).returned.get(group)
        if not returned:
            moved = []

            def deciding(fetched):
                new, result = decide(fetched)
                moved[:] = [(fetched.cursor, new)]  # the last try is the one committed
                return new, result
            result = await super().consume(name, group, max_bytes, deciding, blocking)
            return ((*moved[0], 1) if moved and moved[0][0] != moved[0][1] else None), result
        # Given-back bytes first: their sessions count as open (their markers
        # were consumed with them), so they bring bytes, never an EOF.
        h = returned[0]
        at = Cursor(h.offset, h.start, frozenset({h.session} if h.session else ()))
        new, result = decide(Fetched(at, [StoredRecord(h.offset, Kind.DATA, h.session, h.data,
                                                       h.start, h.end)]))
        if new == at:
            return None, result
        if new.offset > h.offset or new.byte_pos >= h.end:
            returned.pop(0)
        else:
            returned[0] = Held(h.offset, new.byte_pos, h.session, h.data[new.byte_pos - h.start:])
        return (at, new, h.deliveries + 1), result

    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        await self._enter()
        pipe = self._pipe(name)
        if pipe.groups.get(group, Cursor()) != expected:
            return False
        pipe.groups[group] = new
        return True

    async def delete_group(self, name: str, group: str) -> bool:
        await self._enter()
        pipe = self._pipe(name)
        pipe.returned.pop(group, None)
        pipe.aside.pop(group, None)
        return pipe.groups.pop(group, None) is not None

    # -- holds (the Holds capability) -----------------------------------------
    def holds(self, name: str, group: str) -> bool:
        return True  # every group

    async def consume_held(self, holder, name, group, max_bytes, decide, blocking=False):
        moved, result = await self._consume(name, group, max_bytes, decide, blocking)
        if moved is not None:
            self._taken.setdefault(holder, []).append((name, group, *moved))
        return result

    async def given_back(self, name: str, group: str) -> bool:
        await self._enter()
        return bool(self._pipe(name).returned.get(group))

    async def set_aside(self, name: str, group: str) -> list[Held]:
        await self._enter()
        return list(self._pipe(name).aside.get(group, []))

    def settle(self, holder: object) -> None:
        self._taken.pop(holder, None)

    async def give_back(self, name: str, group: str, holder: object,
                        since: tuple[int, int] | None) -> None:
        await self._enter()
        taken = self._taken.pop(holder, [])
        pipe = self.store.pipes.get(name)
        if pipe is None:
            return
        back = pipe.returned.setdefault(group, [])
        for _, _, old, new, deliveries in taken:
            for r, _ in pipe.records:
                if r.kind is not Kind.DATA or not old.offset <= r.offset <= new.offset:
                    continue
                start = old.byte_pos if r.offset == old.offset else 0
                end = new.byte_pos if r.offset == new.offset else len(r.data)
                if since is not None:
                    if (r.offset, end) <= since:
                        continue
                    if r.offset == since[0]:
                        start = max(start, since[1])
                if end > start:
                    to = back if deliveries < MAX_DELIVERIES else \
                        pipe.aside.setdefault(group, [])
                    to.append(Held(r.offset, start, r.session, r.data[start:end], deliveries))
        back.sort(key=lambda h: (h.offset, h.start))
        self.store.notify(name)

    # -- liveness (the Liveness capability) --------------------------------
    async def heartbeat(self, mount_id: str) -> None:
        await self._enter()
        self.store.mounts[mount_id] = time.monotonic()

    async def mount_ages(self) -> dict[str, float]:
        await self._enter()
        now = time.monotonic()
        return {mount: now - seen for mount, seen in self.store.mounts.items()}

    # -- status and retention ------------------------------------------------
    async def stats(self, name: str) -> PipeStats:
        await self._enter()
        pipe = self._pipe(name)
        data = [r for r, _ in pipe.records if r.kind is Kind.DATA]
        groups = {}
        for group, cursor in pipe.groups.items():
            left = [r for r in data if r.offset >= cursor.offset]
            back = pipe.returned.get(group, [])
            redelivered = sum(1 for taken in self._taken.values() for t in taken
                              if t[:2] == (name, group) and t[4] > 1)
            groups[group] = GroupStats(
                len(left) + len(back),
                max(0, sum(len(r.data) for r in left) - cursor.byte_pos)
                + sum(len(h.data) for h in back),
                redelivered, len(pipe.aside.get(group, [])))
        return PipeStats(len(data), sum(len(r.data) for r in data), groups)

    async def apply_retention(self) -> int:
        """Remove the records every group has consumed, and those older than
        ``retention_seconds``; returns how many."""
        await self._enter()
        cutoff = time.time() - self.retention_seconds
        removed = 0
        for pipe in self.store.pipes.values():
            floor = min((c.offset for c in pipe.groups.values()), default=pipe.end)
            kept = [(r, ts) for r, ts in pipe.records if r.offset >= floor and ts >= cutoff]
            removed += len(pipe.records) - len(kept)
            pipe.records = kept
        return removed

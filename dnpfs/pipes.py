"""Pipe semantics for one mount: the facade the filesystem layer calls.

Holds, per pipe that has open handles on this mount, the wake-up event for
blocked readers and the writers' outbox.  Knows nothing of inodes or FUSE;
knows nothing of how a backend stores records.
"""

from __future__ import annotations

import logging
import math

import trio

from .backends.base import Backend, GroupStats, Membership
from .errors import Busy, DnpfsError, NoSuchPipe, PipeGone, ShuttingDown
from .interrupts import Interrupts
from .leases import Leases, new_mount_id
from .names import check_name
from .reader import ReaderHandle
from .writer import Outbox, WriterSession

log = logging.getLogger(__name__)

SHOWN_ASIDE = 100  # set-aside records listed in a pipe's status, oldest first


class PipeState:
    """What this mount holds for one pipe while it has open handles."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.changed = trio.Event()
        self.readers: set[ReaderHandle] = set()
        self.outbox: Outbox | None = None
        self.attaching: dict[str, int] = {}  # group -> opens still inside backend.attach
        self.checking_gone = False

    @property
    def unused(self) -> bool:
        return not self.readers and self.outbox is None and not self.attaching

    def notify(self) -> None:
        """The pipe may have new records, or be gone: wake readers and pollers."""
        self.changed.set()
        self.changed = trio.Event()
        for reader in self.readers:
            handle, reader.poll_handle = reader.poll_handle, None
            if handle is not None:
                try:
                    handle.notify()
                except OSError as e:  # the poller went away
                    log.debug("poll notify on %s: %s", self.name, e)


class Pipes:
    def __init__(
        self,
        backend: Backend,
        *,
        buffer_bytes: int = 16 << 20,
        delivery_timeout: float = 120.0,
        session_timeout: float = 30.0,
        signals: Interrupts | None = None,
    ) -> None:
        self.backend = backend
        self.mount_id = new_mount_id()
        self.leases = Leases(self, self.mount_id, session_timeout)
        self.buffer_bytes = buffer_bytes
        self.delivery_timeout = delivery_timeout
        self.signals = signals or Interrupts()
        self.closing = False
        self._states: dict[str, PipeState] = {}
        self._nursery: trio.Nursery | None = None
        self._leases_scope = trio.CancelScope()
        self._leases_done: trio.Event | None = None  # set while the leases task runs

    # -- lifecycle ---------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Start the backend and background tasks; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.backend.start(nursery, self._on_change)
            nursery.start_soon(self._run_leases)
            task_status.started()
            await trio.sleep(math.inf)

    async def _run_leases(self) -> None:
        self._leases_done = trio.Event()
        try:
            with self._leases_scope:
                await self.leases.run()
        finally:
            self._leases_done.set()

    async def shutdown(self, timeout: float) -> None:
        """Stop taking work, wake every reader with EOF, end every writer
        session and store what writers handed over (for up to *timeout*).

        From ``closing`` on, writes and opens are refused (ENOTCONN), so each
        session's END queued here is its last record: a write() that returned
        queued its record before it, and the store is closed only after every
        queue drained.
        """
        self.closing = True
        states = list(self._states.values())
        for state in states:
            state.notify()
        with trio.move_on_after(timeout) as scope:
            async with trio.open_nursery() as nursery:
                for state in states:
                    if state.outbox is not None:
                        for session in list(state.outbox.sessions):
                            nursery.start_soon(session.close)
            # Records queued without a waiter (an END of an open that failed)
            # are stored too before the store closes.
            for state in list(self._states.values()):
                if state.outbox is not None:
                    await state.outbox.wait_drained()
        if scope.cancelled_caught:
            log.error("shutdown: writers' records not all stored within %.1fs", timeout)
        # Nothing may use the store once it is closed: stop the heartbeat and
        # session expiry first (a heartbeat on a closed store failed the daemon).
        self._leases_scope.cancel()
        if self._leases_done is not None:
            with trio.move_on_after(1):  # a call already in the store's thread finishes
                await self._leases_done.wait()
        await self.backend.close()

    # -- change notifications from the backend -----------------------------
    def _on_change(self, name: str | None, gone: bool = False) -> None:
        states = list(self._states.values()) if name is None else [self._states.get(name)]
        for state in states:
            if state is None:
                continue
            state.notify()
            if self.closing:
                continue
            if not gone and name is not None:
                continue
            if state.outbox is not None and state.outbox.sessions and not state.checking_gone:
                state.checking_gone = True
                self._nursery.start_soon(self._check_gone, state)

    async def _check_gone(self, state: PipeState) -> None:
        """A pipe unlinked elsewhere fails its open writers' next write or close."""
        try:
            if not await self.backend.pipe_exists(state.name) and state.outbox is not None:
                for session in state.outbox.sessions:
                    session.fail(PipeGone(state.name))
        except DnpfsError as e:  # the store away or closing: the next change checks again
            log.debug("checking whether %s still exists: %s", state.name, e)
        finally:
            state.checking_gone = False

    def waiting_groups(self) -> list[tuple[str, str]]:
        """(pipe, group) pairs with a reader waiting on this mount: blocked in
        read(), or in poll/select/epoll (it left a poll handle)."""
        return sorted({(s.name, r.group) for s in self._states.values()
                       for r in s.readers if r.blocked or r.poll_handle is not None})

    def _state(self, name: str) -> PipeState:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = PipeState(name)
        return state

    def _release(self, state: PipeState) -> None:
        if state.unused and self._states.get(state.name) is state:
            del self._states[state.name]

    def _check_open(self) -> None:
        if self.closing:
            raise ShuttingDown("dnpfs is shutting down")

    # -- pipes ---------------------------------------------------------------
    async def create(self, name: str) -> bool:
        self._check_open()
        return await self.backend.create_pipe(check_name(name))

    async def delete(self, name: str) -> None:
        if not await self.backend.delete_pipe(name):
            raise NoSuchPipe(name)
        state = self._states.get(name)
        if state is not None:
            if state.outbox is not None:
                for session in state.outbox.sessions:
                    session.fail(PipeGone(name))
            state.notify()

    async def delete_group(self, name: str, group: str) -> None:
        """NoSuchPipe for a missing group, as for a missing pipe (ENOENT)."""
        state = self._states.get(name)
        if state and any(r.group == group for r in state.readers):
            raise Busy(f"reader group {group!r} of {name} has readers open here")
        if not await self.backend.delete_group(name, group):
            raise NoSuchPipe(f"{name}@{group}")

    async def list(self) -> list[str]:
        return await self.backend.list_pipes()

    async def exists(self, name: str) -> bool:
        return await self.backend.pipe_exists(name)

    async def describe(self, name: str) -> dict:
        """One pipe for `dnpfs status` and xattrs: the store's view and this mount's."""
        stats = await self.backend.stats(name)
        state = self._states.get(name)
        readers: dict[str, int] = {}
        for reader in state.readers if state else ():
            readers[reader.group] = readers.get(reader.group, 0) + 1
        groups = {}
        for g in sorted(stats.groups.keys() | readers.keys()):
            s = stats.groups.get(g) or GroupStats(None, None)
            groups[g] = {"backlog_records": s.backlog_records, "backlog_bytes": s.backlog_bytes,
                         "readers_here": readers.get(g, 0)}
            if s.redelivered is not None:
                groups[g]["redelivered"] = s.redelivered
            if s.set_aside is not None:
                groups[g]["set_aside"] = s.set_aside
            if s.set_aside:
                groups[g]["set_aside_records"] = [
                    {"record": h.offset, "start": h.start, "deliveries": h.deliveries,
                     "bytes": len(h.data), "data": h.data[:200].decode("utf-8", "replace")}
                    for h in (await self.backend.set_aside(name, g))[:SHOWN_ASIDE]]
            if isinstance(self.backend, Membership) and \
                    (membership := self.backend.membership(name, g)) is not None:
                groups[g]["membership"] = membership
        return {
            "pipe": name,
            "records": stats.records,
            "bytes": stats.bytes,
            "groups": groups,
            "writers_here": len(state.outbox.sessions) if state and state.outbox else 0,
            "blocked_readers_here": sum(r.blocked for r in state.readers) if state else 0,
        }

    async def summary(self) -> dict:
        """The mount as a whole (the root's user.dnpfs.status)."""
        return {
            "backend": self.backend.description,
            "default_group": self.backend.default_group,
            "health": await self.backend.health(),
            "pipes": len(await self.backend.list_pipes()),
            "readers_here": sum(len(s.readers) for s in self._states.values()),
            "writers_here": sum(len(s.outbox.sessions) for s in self._states.values() if s.outbox),
        }

    # -- readers -------------------------------------------------------------
    async def open_reader(
        self, name: str, group: str, pid: int, nonblock: bool, packet: bool
    ) -> ReaderHandle:
        self._check_open()
        state = self._state(name)
        # Counted while attaching, so a reader of the same group closing
        # meanwhile does not detach the group under this one.
        state.attaching[group] = state.attaching.get(group, 0) + 1
        try:
            horizon = await self.backend.attach(name, group)
            handle = ReaderHandle(self, state, group, horizon, pid, nonblock, packet)
            state.readers.add(handle)
        finally:
            state.attaching[group] -= 1
            if not state.attaching[group]:
                del state.attaching[group]
            self._release(state)  # only if the attach failed and nothing else holds it
        return handle

    async def close_reader(self, handle: ReaderHandle) -> None:
        state = handle.state
        try:
            await handle.close()
        except DnpfsError as e:  # still in flight: delivered again once this daemon stops
            log.warning("giving back what a reader of %s took: %s", state.name, e)
        state.readers.discard(handle)
        self._release(state)
        if not any(r.group == handle.group for r in state.readers) and not state.attaching.get(
            handle.group
        ):
            try:
                await self.backend.detach(state.name, handle.group)
            except NoSuchPipe:
                pass  # deleted meanwhile: nothing is left to detach from

    # -- writers -------------------------------------------------------------
    async def open_writer(self, name: str, pid: int, sync: bool) -> WriterSession:
        self._check_open()
        if not await self.backend.pipe_exists(name):
            raise NoSuchPipe(name)
        # Shutdown may have begun meanwhile: a session it did not see would
        # never get its END.  No await from here until begin() registers it.
        self._check_open()
        state = self._state(name)
        if state.outbox is None:
            state.outbox = Outbox(self.backend, name, self.buffer_bytes, self.delivery_timeout)
            self._nursery.start_soon(state.outbox.run, self._outbox_idle)
        session = WriterSession(state.outbox, self.backend.max_record_size, sync,
                                guard=self.signals.interruptible,
                                mount_id=self.mount_id, stopping=lambda: self.closing)
        await session.begin()
        return session

    def _outbox_idle(self, outbox: Outbox) -> None:
        state = self._states.get(outbox.name)
        if state is not None and state.outbox is outbox:
            state.outbox = None
            self._release(state)

    async def close_writer(self, session: WriterSession) -> None:
        await session.close()

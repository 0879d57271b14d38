"""Reader handles: blocking reads that consume from a group's cursor.

A read asks the backend to ``consume``: fetch the records at the group's
committed cursor, let ``delivery.take`` decide what to deliver, and commit
the new cursor as one step for all readers of the group, on this mount or
another.  Nothing is claimed that is not returned, so bytes a read did not
take stay in the pipe.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .backends.base import Fetched
from .delivery import ReaderView, Taken, take, would_deliver
from .metrics import METRICS
from .model import Cursor
from .errors import NoSuchPipe, StoreError, Unreadable, WouldBlock

if TYPE_CHECKING:
    from .pipes import PipeState, Pipes

log = logging.getLogger(__name__)


class ReaderHandle:
    def __init__(
        self,
        pipes: Pipes,
        state: PipeState,
        group: str,
        horizon: int,
        pid: int,
        nonblock: bool,
        packet: bool,
    ) -> None:
        self.pipes = pipes
        self.state = state
        self.group = group
        self.pid = pid
        self.nonblock = nonblock
        self.packet = packet
        self.view = ReaderView(horizon)
        self.eof = False  # once EOF was returned, this handle stays at EOF
        self.blocked = False  # waiting in read() now
        self.poll_handle = None

    @property
    def name(self) -> str:
        return self.state.name

    async def read(self, size: int) -> tuple[bytes, ...]:
        """The bytes of one read(), a piece per record (joined by the caller:
        fs.Filesystem.read); () for EOF."""
        backend = self.pipes.backend
        while not self.eof:
            if self.pipes.closing:
                self.eof = True
                break
            changed = self.state.changed  # taken before fetching: no wake-up is missed
            self.pipes.signals.check(self.pid)
            view = self.view

            def decide(fetched: Fetched) -> tuple[Cursor, Taken]:
                taken = take(fetched.cursor, fetched.records, size, self.packet, view)
                return taken.cursor, taken

            try:
                taken = await backend.consume(self.name, self.group, size, decide,
                                              blocking=not self.nonblock)
            except NoSuchPipe:
                self.eof = True  # unlinked: blocked readers see EOF
                break
            except StoreError:
                if self.pipes.closing:  # the store closed under us: that is EOF too
                    self.eof = True
                    break
                raise
            self.view = taken.view
            if taken.unreadable:
                raise Unreadable(f"{self.name}: the records up to offset {taken.cursor.offset - 1} "
                                 "cannot be read; the next read goes on after them")
            if taken.eof:
                self.eof = True
                break
            if taken.size:
                METRICS.count("reads")
                METRICS.count("bytes_out", taken.size)
                return taken.parts
            if self.nonblock:
                raise WouldBlock(self.name)
            self.blocked = True
            METRICS.blocked_readers += 1
            try:
                with self.pipes.signals.interruptible():
                    await changed.wait()
            finally:
                self.blocked = False
                METRICS.blocked_readers -= 1
        return ()

    async def readable(self) -> bool:
        """Would read() answer now?  (poll/select/epoll)"""
        if self.eof or self.pipes.closing:
            return True
        try:
            fetched = await self.pipes.backend.fetch(self.name, self.group, 1)
        except NoSuchPipe:
            return True
        return would_deliver(fetched.cursor, fetched.records, self.view)

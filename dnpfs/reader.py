"""Reader handles: blocking reads that consume from a group's cursor.

A read asks the backend to ``consume``: fetch the records at the group's
committed cursor, let ``delivery.take`` decide what to deliver, and commit
the new cursor as one step for all readers of the group, on this mount or
another.  Nothing is claimed that is not returned, so bytes a read did not
take stay in the pipe.

Work queues, on a store that ``Holds`` (docs/semantics.md, "Work queues"):

- Whole records: a read that takes part of a record takes the record
  (``delivery.take`` with ``whole``) and keeps the rest as ``held``, which
  only this handle's next reads deliver.  Readers competing in a group, on
  this mount or others, never split one write().
- A job is done at the handle's next read() once ``held`` is delivered, or
  at its close: the store keeps what the handle took until then (``settle``).
  A handle whose process was killed by a signal gives all of it back; one
  closed part way through a record gives back the rest (``close``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .backends.base import Fetched, Holds
from .delivery import ReaderView, Taken, take, would_deliver
from .metrics import METRICS
from .model import Cursor, Held
from .errors import NoSuchPipe, StoreError, Unreadable, WouldBlock

if TYPE_CHECKING:
    from .pipes import PipeState, Pipes

log = logging.getLogger(__name__)

# A read fetches at least this much, so the record it starts is at hand whole
# and can be held (a record is one write(): the kernel splits larger writes).
WHOLE_FETCH = 256 << 10


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
        self.whole = isinstance(pipes.backend, Holds) and pipes.backend.holds(state.name, group)
        self.held: Held | None = None  # the rest of a record this handle took part of
        self.killed = False  # its opener died of a signal (fs.Filesystem.flush)

    @property
    def name(self) -> str:
        return self.state.name

    async def read(self, size: int) -> tuple[bytes, ...]:
        """The bytes of one read(), a piece per record (joined by the caller:
        fs.Filesystem.read); () for EOF."""
        backend = self.pipes.backend
        if self.held is not None:
            return self._from_held(size)
        if self.whole:
            backend.settle(self)  # asking for more: what it took before is done
        while not self.eof:
            if self.pipes.closing:
                self.eof = True
                break
            changed = self.state.changed  # taken before fetching: no wake-up is missed
            self.pipes.signals.check(self.pid)
            view = self.view

            def decide(fetched: Fetched) -> tuple[Cursor, Taken]:
                taken = take(fetched.cursor, fetched.records, size, self.packet, view,
                             self.whole)
                return taken.cursor, taken

            try:
                if self.whole:
                    taken = await backend.consume_held(
                        self, self.name, self.group, max(size, WHOLE_FETCH), decide,
                        blocking=not self.nonblock)
                else:
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
                if self.whole:  # it asks for nothing more: a store must not fetch for it
                    backend.settle(self)
                break
            self.held = taken.held
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

    def _from_held(self, size: int) -> tuple[bytes, ...]:
        held = self.held
        chunk, rest = held.data[:size], held.data[size:]
        self.held = Held(held.offset, held.start + len(chunk), held.session, rest) if rest \
            else None
        METRICS.count("reads")
        METRICS.count("bytes_out", len(chunk))
        return (chunk,)

    async def put_back(self) -> None:
        """A close() part way through a record: its rest goes back to the
        group now (a FUSE release comes after close() returned: the next
        reader must not find the rest missing meanwhile)."""
        held, self.held = self.held, None
        if held is not None:
            await self.pipes.backend.give_back(self.name, self.group, self,
                                               (held.offset, held.start))

    async def close(self) -> None:
        """The handle's last job: done at a close, unless its process was
        killed (all of it goes back) or it stopped part way through a
        record (the rest goes back)."""
        if not self.whole:
            return
        if self.killed:
            self.held = None
            log.info("a reader of %s was killed: its unfinished read goes back to %r",
                     self.name, self.group)
            await self.pipes.backend.give_back(self.name, self.group, self, None)
        elif self.held is not None:
            await self.put_back()
        else:
            self.pipes.backend.settle(self)

    async def readable(self) -> bool:
        """Would read() answer now?  (poll/select/epoll)"""
        if self.held is not None or self.eof or self.pipes.closing:
            return True
        try:
            if self.whole and await self.pipes.backend.given_back(self.name, self.group):
                return True
            fetched = await self.pipes.backend.fetch(self.name, self.group, 1)
        except NoSuchPipe:
            return True
        return would_deliver(fetched.cursor, fetched.records, self.view)

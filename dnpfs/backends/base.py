"""The small interface every backend implements.

A backend stores pipes (ordered logs of records) and, per pipe, the cursor of
each reader group.  It knows nothing of sessions or EOF: ``delivery.take``
decides those from the records and cursor it returns.

Concurrency contract: all methods are trio coroutines and may be called from
many tasks at once.  ``commit`` is a compare-and-swap, so readers of one group
on several mounts never deliver the same bytes twice.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from ..model import Cursor, Record, StoredRecord

T = TypeVar("T")

# Called with a pipe name when that pipe may have new records, or with None
# when any pipe may have changed.  gone=True: the pipe was created or deleted
# (open writers then check that it still exists; appends alone never make
# them look).
ChangeCallback = Callable[..., None]  # (name: str | None, gone: bool = False)


@dataclass(frozen=True, slots=True)
class Fetched:
    cursor: Cursor
    records: Iterable[StoredRecord]  # iterate once; may be read lazily


@dataclass(frozen=True, slots=True)
class GroupStats:
    backlog_records: int | None  # data records not yet delivered to the group
    backlog_bytes: int | None


@dataclass(frozen=True, slots=True)
class PipeStats:
    """What `dnpfs status` and the pipe's xattrs show; None where unknown."""

    records: int | None = None  # data records retained
    bytes: int | None = None
    groups: dict[str, GroupStats] = field(default_factory=dict)


class Backend(abc.ABC):
    #: Largest data record the backend accepts; longer writes are split.
    max_record_size: int = 1 << 30
    #: Shown by `dnpfs status` and in logs.
    description: str = ""

    def check(self) -> None:
        """Cheap synchronous check before the daemon forks (store writable,
        configuration sane).  Raises StoreError with one readable line."""

    @abc.abstractmethod
    async def start(self, nursery: trio.Nursery, on_change: ChangeCallback) -> None:
        """Connect, and start background tasks (change watching, retention) in *nursery*.

        Raises StoreError with one readable line when the store cannot be used.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections.  Called once, after every append has returned."""

    # -- pipes -------------------------------------------------------------
    @abc.abstractmethod
    async def create_pipe(self, name: str) -> bool:
        """Create the pipe; False if it already existed."""

    @abc.abstractmethod
    async def delete_pipe(self, name: str) -> bool:
        """Delete the pipe, its records and groups; False if there was none."""

    @abc.abstractmethod
    async def list_pipes(self) -> list[str]:
        """Every pipe, sorted."""

    @abc.abstractmethod
    async def pipe_exists(self, name: str) -> bool: ...

    # -- records -----------------------------------------------------------
    @abc.abstractmethod
    async def append(self, name: str, records: Sequence[Record], durable: bool = True) -> None:
        """Store *records* in order, visible to readers when this returns.

        With *durable*, this and every earlier append of this mount survive a
        machine crash when it returns (``records`` may be empty: sync only).
        Without, they must at least survive the daemon's own crash.
        Raises PipeGone if the pipe no longer exists, StoreError otherwise.
        """

    # -- reader groups -----------------------------------------------------
    @abc.abstractmethod
    async def attach(self, name: str, group: str) -> int:
        """A reader of *group* opened on this mount.  A new group starts at the
        oldest retained record.  Returns the pipe's end offset: every record
        appended from now on has an offset at least this large."""

    @abc.abstractmethod
    async def detach(self, name: str, group: str) -> None:
        """The last reader of *group* on this mount closed."""

    @abc.abstractmethod
    async def fetch(self, name: str, group: str, max_bytes: int) -> Fetched:
        """The group's committed cursor and the records from it on.

        Returns at least the record at the cursor when there is one, and
        further records until about *max_bytes* of data; never blocks waiting
        for records.  Raises PipeGone if the pipe does not exist.
        """

    async def cursor(self, name: str, group: str) -> Cursor:
        """The group's cursor alone (its open sessions, for lease expiry).
        A backend that can answer without looking for records says so here."""
        return (await self.fetch(name, group, 1)).cursor

    @abc.abstractmethod
    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        """Move the group's cursor from *expected* to *new*; False (and no
        change) if another reader moved it first."""

    async def consume(
        self, name: str, group: str, max_bytes: int, decide: Callable[[Fetched], tuple[Cursor, T]],
        blocking: bool = False,
    ) -> T:
        """Fetch, let *decide* (pure, cheap) choose the group's new cursor, and
        commit it, as one step for the other readers of the group; returns
        what *decide* returned with it.

        *blocking*: the caller waits for ``on_change`` if nothing is delivered,
        so records not at hand yet (stored, but still on their way to this
        mount) need not be waited for: their arrival wakes the caller.  A
        non-blocking read or poll must see everything stored (False).

        This default is fetch plus compare-and-swap, retried when another
        reader moved first; a backend with transactions may do it in one.
        """
        while True:
            fetched = await self.fetch(name, group, max_bytes)
            new, result = decide(fetched)
            if new == fetched.cursor or await self.commit(name, group, fetched.cursor, new):
                return result

    @abc.abstractmethod
    async def delete_group(self, name: str, group: str) -> bool: ...

    # -- liveness of mounts (session leases) --------------------------------
    #: True if heartbeat/mount_ages work; otherwise no session ever expires.
    tracks_liveness: bool = False

    async def heartbeat(self, mount_id: str) -> None:
        """Record that mount *mount_id* is alive now."""

    async def mount_ages(self) -> dict[str, float]:
        """Seconds since each known mount's last heartbeat."""
        return {}

    # -- status ---------------------------------------------------------------
    async def stats(self, name: str) -> PipeStats:
        """Retained records and each group's backlog.  Raises PipeGone."""
        return PipeStats()

    async def health(self) -> str:
        """"ok", or one line saying what is wrong with the store."""
        return "ok"

    def membership(self, name: str, group: str) -> str | None:
        """This mount's part in reader group *group* of pipe *name*, where one
        mount at a time is handed a group's records: "reading" (this one),
        "standby" (another one), "joining" (not known yet: the group is
        forming or moving).  None where every mount reads (or no reader here)."""
        return None

"""The store contract: what every backend implements, and what it may add.

A store holds pipes (ordered logs of records) and, per pipe, the cursor of
each reader group, and tells the mount when a pipe may have changed.  It
knows nothing of sessions or EOF: ``delivery.take`` decides those from the
records and cursor it returns.  ``Backend`` is that contract, and nothing
more; a store that can also do more says so by offering a capability, a
small protocol of its own:

- ``Liveness``: heartbeats of mounts, so sessions of a silent mount expire
  (dnpfs/leases.py).  Without it no session ever expires.
- ``Membership``: one mount at a time is handed a group's records (Kafka).
- ``Holds``: what a reader handle took stays the store's to deliver again
  until the handle is done with it (work queues: whole records, redelivery).

Groups with a cursor, groups without.  A *cursor group* has a cursor the
store keeps: ``fetch`` looks at it and the records from it on, ``commit``
moves it (a compare-and-swap), a group detached and attached again resumes
at it, a cursor may stand inside a record, ``delete_group`` forgets it.
Named groups (``pipe@g``) are cursor groups on every store.  A pipe's
default group may have no cursor (Kafka's share group: records are acquired
for a mount, not looked at); where ``Holds.holds`` says so, it is read only
through ``consume_held``, ``fetch`` shows nothing, ``commit`` is not used
and ``cursor`` answers the sessions open (for leases) alone.  On every store
the default group promises, through the operations it offers:

- records written before any reader are kept for it (it starts at the
  oldest retained record) and, for one reader, come in the writers' order;
- each byte goes to one reader handle, on one mount, across every mount
  (a share group: to whichever asks; a cursor group: to whoever moves the
  cursor first);
- where the store holds for it (``Holds.holds``: every store, but Kafka
  with ``--share-groups never`` or a broker without share groups): each
  record goes whole to one handle; what a handle took and did not finish
  goes back and is the group's next read (``Holds.give_back``); after
  ``MAX_DELIVERIES`` it is set aside and listed where it was
  (``Holds.set_aside``);
- EOF after the writers' sessions end (``delivery.take`` decides, from the
  sessions the store reports open at an END);
- retention keeps what it has not consumed (a store that applies its own
  retention); Kafka's broker applies retention by age alone.

Errors: any operation on a pipe the store does not have raises
``NoSuchPipe`` (``create_pipe``/``delete_pipe`` answer False/True instead);
the store could not do its work: ``StoreError``.  ``dnpfs/backends/memory.py``
is the reference for every rule here, and tests/contract/ checks each store
against it.

Concurrency: all methods are trio coroutines and may be called from many
tasks at once.  ``commit`` is a compare-and-swap, so readers of one group on
several mounts never deliver the same bytes twice.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

import trio

from ..errors import NoSuchPipe
from ..model import Cursor, Held, Record, StoredRecord

T = TypeVar("T")

#: A read that went out this many times and was given back each time (its
#: reader killed, its daemon dead) is set aside instead of going out again:
#: a job that kills its worker must not kill every worker in turn.
MAX_DELIVERIES = 5


class ChangeCallback(Protocol):
    """What a store calls (in the trio thread) when pipes may have changed."""

    def __call__(self, name: str | None, gone: bool = False) -> None:
        """*name* may have new records; None: any pipe may have changed.
        *gone*: the pipe was created or deleted (open writers then check that
        it still exists; appends alone never make them look).  Must not block."""


@dataclass(frozen=True, slots=True)
class Fetched:
    cursor: Cursor
    records: Iterable[StoredRecord]  # iterate once; may be read lazily


@dataclass(frozen=True, slots=True)
class GroupStats:
    backlog_records: int | None  # data records not yet delivered to the group
    backlog_bytes: int | None
    redelivered: int | None = None  # reads in flight that went out more than once (Holds)
    set_aside: int | None = None  # records set aside after MAX_DELIVERIES (Holds)


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
    #: What a pipe's default group is on this store, where stores differ
    #: (Kafka: "share group" or "consumer group (why)"); shown by `dnpfs status`.
    default_group: str = ""

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
        Raises NoSuchPipe if the pipe no longer exists, StoreError otherwise.
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
        for records.  Raises NoSuchPipe if the pipe does not exist.
        """

    async def cursor(self, name: str, group: str) -> Cursor:
        """The group's cursor alone (its open sessions, for lease expiry).
        A backend that can answer without looking for records says so here."""
        return (await self.fetch(name, group, 1)).cursor

    @abc.abstractmethod
    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        """Move the group's cursor from *expected* to *new*; False (and no
        change) if another reader moved it first.  Only after ``attach`` of
        the group on this mount.  A pipe gone meanwhile: NoSuchPipe, or False
        where the store cannot tell without asking (Kafka)."""

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
    async def delete_group(self, name: str, group: str) -> bool:
        """Forget the group's cursor; False if the pipe has no such group.
        Raises NoSuchPipe if there is no such pipe (docs/semantics.md: ENOENT
        either way, but a store must not mistake one for the other)."""

    # -- status ---------------------------------------------------------------
    async def stats(self, name: str) -> PipeStats:
        """Retained records and each group's backlog, None where the store
        cannot tell cheaply.  Raises NoSuchPipe."""
        if not await self.pipe_exists(name):
            raise NoSuchPipe(name)
        return PipeStats()

    async def health(self) -> str:
        """"ok", or one line saying what is wrong with the store."""
        return "ok"


# -- capabilities: a store offers these or not (isinstance tells) -------------
@runtime_checkable
class Liveness(Protocol):
    """Mount heartbeats, for session leases (dnpfs/leases.py).  Offered only
    where heartbeats of different mounts compare (one clock, or the
    receiver's clock)."""

    async def heartbeat(self, mount_id: str) -> None:
        """Record that mount *mount_id* is alive now."""

    async def mount_ages(self) -> dict[str, float]:
        """Seconds since each known mount's last heartbeat."""


@runtime_checkable
class Membership(Protocol):
    """A store where one mount at a time is handed a group's records."""

    def membership(self, name: str, group: str) -> str | None:
        """This mount's part in reader group *group* of pipe *name*: "reading"
        (this one), "standby" (another one), "joining" (not known yet: the
        group is forming or moving).  None where no reader is here."""


@runtime_checkable
class Holds(Protocol):
    """A store that keeps what a reader handle took until the handle is done
    with it, for work queues (docs/semantics.md, "Work queues").

    A read by a *holder* (a reader handle) may take a whole record while it
    delivers only part of it (``delivery.take`` with ``whole``): the group's
    cursor moves past the record, and the rest is the holder's.  What the
    holder took stays the store's to deliver again until the holder
    ``settle``s (its job is done) or gives it back (``give_back``); if this
    daemon dies meanwhile, the group's next read gets it again, first.
    """

    def holds(self, name: str, group: str) -> bool:
        """Does *group* of pipe *name* keep what its handles take (else it is
        read as by ``Backend.consume``)?  Kafka: only the default group, where
        a share group reads it (a group without a cursor: see above)."""

    async def consume_held(self, holder: object, name: str, group: str, max_bytes: int,
                           decide: Callable[[Fetched], tuple[Cursor, T]],
                           blocking: bool = False) -> T:
        """``Backend.consume``, keeping what it took for *holder*."""

    def settle(self, holder: object) -> None:
        """What *holder* took is done.  Cheap, never blocks: the store may
        forget it a little later."""

    async def give_back(self, name: str, group: str, holder: object,
                        since: tuple[int, int] | None) -> None:
        """What *holder* took and did not settle goes back to the group: its
        next read, on any mount, gets it first.  *since*: (record offset,
        byte) before which the bytes count as done (a handle closed part way
        through a record); None: all of it (its process was killed).  A
        store that acknowledges whole records (Kafka) gives the whole record
        back either way.  What went out ``MAX_DELIVERIES`` times is set aside
        instead, and listed by ``set_aside`` at least on this mount."""

    async def given_back(self, name: str, group: str) -> bool:
        """Are bytes given back (or left by a dead daemon) waiting for the
        group's next read?  ``fetch`` does not show them: for poll()."""

    async def set_aside(self, name: str, group: str) -> list[Held]:
        """The records *group* set aside, oldest first (their ``deliveries``)."""

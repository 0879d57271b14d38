"""Plain data shared by every layer: records as stored, and a group's cursor."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Kind(enum.Enum):
    """What a record means to readers.  The values are the wire names."""

    DATA = "data"
    BEGIN = "begin"  # a writer session opened
    END = "end"  # a writer session closed
    # Never stored: a backend's stand-in for records it holds but cannot
    # read (a corrupt batch); the read that reaches it fails with EIO.
    UNREADABLE = "unreadable"

    @classmethod
    def stored(cls) -> tuple[Kind, ...]:
        """The kinds a record in a store can have."""
        return (cls.DATA, cls.BEGIN, cls.END)


@dataclass(frozen=True, slots=True)
class Record:
    """One record as handed to a backend: the bytes of one write(), or a marker.

    ``session`` is None for data that came from outside dnpfs (a plain Kafka
    producer): such records carry bytes but never open or close a session.
    """

    kind: Kind
    session: str | None
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record at its position in a pipe.  Offsets grow; they need not be dense.

    A backend may return only part of a large record's bytes: ``data`` then
    holds the bytes from ``start`` on, and ``size`` is the whole record's length.
    """

    offset: int
    kind: Kind
    session: str | None
    data: bytes = b""
    start: int = 0
    size: int = -1

    @property
    def length(self) -> int:
        return self.size if self.size >= 0 else self.start + len(self.data)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a reader group stands in a pipe.

    ``offset`` is the next record to deliver and ``byte_pos`` how much of it
    was already delivered.  ``open_sessions`` are the writer sessions the group
    has seen begin (or carry data) and not yet seen end: EOF is decided from it.
    """

    offset: int = 0
    byte_pos: int = 0
    open_sessions: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class Held:
    """The rest of a record a reader handle took part of (delivery.take
    with ``whole``): that handle's alone, or given back to its group."""

    offset: int  # the record's
    start: int  # where ``data`` begins in the record
    session: str | None
    data: bytes
    deliveries: int = 1  # times these bytes went out (a store's count, for Holds)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

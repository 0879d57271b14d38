"""What one read() delivers from a group's position: bytes, the new cursor, EOF.

This is the one place where EOF is decided.  It is pure: the backend fetches
records from the group's committed cursor, ``take`` decides, and the reader
commits the cursor it returns.  Every backend therefore behaves alike.

The EOF rule, as on a local FIFO, where EOF means "no writer is left":

- The group tracks the writer sessions it has seen open (a BEGIN marker or
  data consumed) and not yet seen close (``Cursor.open_sessions``).
- An END marker that leaves that set empty is end-of-file for the reader that
  consumes it, if that reader was there for the session: it consumed the
  session's BEGIN or data itself (``seen``), or the END was written after the
  reader opened (``horizon``: the pipe's end offset at open).  A stale END,
  of a session that finished before this reader came and whose bytes went to
  an earlier reader, is consumed silently, as a local FIFO would not show a
  new reader an old EOF.
- A read that already holds bytes stops *before* such an END, so the bytes
  come first and the next read() returns 0.

Records the store cannot read (``Kind.UNREADABLE``, a corrupt Kafka batch)
are an error in the stream, met the same way: the bytes before them come
first, the next read() consumes them and fails (EIO), and the read after
that goes on behind them.  The group's open sessions stay as they were.

Whole records (``whole``): a read that takes part of a record takes the
record, moving the group's cursor past it; the rest is ``Taken.held``, for
the same handle's next reads alone (dnpfs/reader.py).  Competing readers
then never split one write() between them: a FIFO leaves unspecified which
reader gets which bytes, so this keeps every FIFO promise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .model import Cursor, Held, Kind, StoredRecord


@dataclass(frozen=True, slots=True)
class ReaderView:
    """What one reader handle brings to the EOF rule."""

    horizon: int = 0  # the pipe's end offset when the handle opened
    seen: frozenset[str] = frozenset()  # sessions whose BEGIN or data it consumed


@dataclass(frozen=True, slots=True)
class Taken:
    parts: tuple[bytes, ...]  # the bytes to deliver, a piece per record, none empty
    size: int
    cursor: Cursor
    eof: bool
    view: ReaderView
    unreadable: bool = False  # the read consumed records that cannot be read: it fails
    held: Held | None = None

    @property
    def data(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)

    @property
    def answers(self) -> bool:
        """True when read() returns now: with bytes, 0 for EOF, or an error."""
        return self.size > 0 or self.eof or self.unreadable


def take(
    cursor: Cursor,
    records: Iterable[StoredRecord],
    max_bytes: int,
    packet: bool = False,
    view: ReaderView = ReaderView(),
    whole: bool = False,
) -> Taken:
    """Consume up to ``max_bytes`` from ``records`` (which start at ``cursor``).

    ``packet``: stop after the bytes of one record (O_DIRECT readers).  The
    rest of a record that did not fit stays for the next read in either mode:
    in the pipe, or with ``whole`` (and the record's bytes all at hand) in
    ``Taken.held``.
    """
    out: list[bytes] = []
    got = 0
    offset, pos = cursor.offset, cursor.byte_pos
    sessions = set(cursor.open_sessions)
    seen = set(view.seen)
    eof = unreadable = False
    held = None

    for rec in records:
        if rec.offset < offset:
            continue  # already consumed (a backend may return from the record's start)
        if rec.offset > offset:
            # Records between were deleted (retention); the partial position
            # belonged to a record that no longer exists.
            offset, pos = rec.offset, 0
        if rec.kind is Kind.DATA:
            if got >= max_bytes:
                break
            if rec.session is not None:
                sessions.add(rec.session)
                seen.add(rec.session)
            at = pos - rec.start
            chunk = rec.data[at : at + (max_bytes - got)]
            if chunk:
                out.append(chunk)
                got += len(chunk)
            if pos + len(chunk) < rec.length:
                pos += len(chunk)
                rest = rec.data[at + len(chunk):]
                if whole and chunk and pos + len(rest) == rec.length:
                    held = Held(rec.offset, pos, rec.session, rest)
                    offset, pos = rec.offset + 1, 0
                break
            offset, pos = rec.offset + 1, 0
            if packet and got:
                break
        elif rec.kind is Kind.BEGIN:
            if rec.session is not None:
                sessions.add(rec.session)
                seen.add(rec.session)
            offset, pos = rec.offset + 1, 0
        elif rec.kind is Kind.UNREADABLE:
            if got:
                break  # deliver the bytes now, the error on the next read
            offset, pos = rec.offset + 1, 0
            unreadable = True
            break
        else:  # Kind.END
            # Only a session the group knows open can end the stream: a second
            # END for one session, or an END whose BEGIN retention removed, is
            # consumed without effect.
            remaining = sessions - {rec.session}
            ends = (
                rec.session in sessions
                and not remaining
                and (rec.session in seen or rec.offset >= view.horizon)
            )
            if ends and got:
                break  # deliver the bytes now, the EOF on the next read
            sessions = remaining
            seen.discard(rec.session)
            offset, pos = rec.offset + 1, 0
            if ends:
                eof = True
                break

    new = Cursor(offset, pos, frozenset(sessions))
    return Taken(tuple(out), got, new, eof, ReaderView(view.horizon, frozenset(seen)),
                 unreadable, held)


def would_deliver(cursor: Cursor, records: Iterable[StoredRecord], view: ReaderView) -> bool:
    """Would a read() return now (bytes or EOF) instead of blocking?  For poll()."""
    return take(cursor, records, 1, view=view).answers

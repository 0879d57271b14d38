"""Segment files: where the embedded store keeps the bytes of records.

Each pipe's records are appended to files of their own, beside the store:
``<store>.segments/<pipe id>-<segment>``, a segment being named by the id of
the first record written to it (as Kafka names a log segment by its base
offset).  SQLite keeps only the index: for each record its segment, the
position of its bytes there, and their length (``_schema``).  The bytes are
written once, with one pwritev per pipe and batch, instead of into B-tree
pages, then the WAL, then the database file at a checkpoint; they are read
with one pread per run of adjacent records.

Crash safety, as with the records inside SQLite (synchronous=NORMAL):

- A kill -9 of a daemon loses nothing committed: its bytes are written
  before the commit that indexes them, and the page cache keeps both.
- Bytes whose commit never came (a daemon killed in between) lie past the
  end the index knows: the next append to the pipe overwrites them, and
  ``tidy`` cuts them off at a daemon's start.
- A durable append (close, fsync, O_SYNC) syncs the segments this daemon
  wrote since its last sync, then marks in ``synced`` how far each is on
  disk, then syncs the WAL (``_appends``).  A power cut can lose bytes no
  mark covers while the index rows naming them survive (a checkpoint, or the
  kernel's writeback, put those on disk first): so the first start after
  another boot (``boot``) drops the index rows past their segment's mark.
  What they named was never acknowledged; everything acknowledged is marked.
  Syncing every batch before its commit instead cost small writes and
  latency five- to tenfold (docs/decisions.md).
- Segment files are removed only under the write lock, once no index row
  names them (retention, a deleted pipe), and a segment is never appended
  to again once its pipe's index has no row in it.

One ``SegmentFiles`` per connection (a connection runs in one thread at a
time), so the file descriptors it keeps open are never closed under another
thread's read.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from ...access import FileAccess

log = logging.getLogger(__name__)

# A pipe moves to a new segment once its current one holds this much, so
# retention gives disk space back in pieces of about this size.
SEGMENT_BYTES = 64 << 20
_OPEN_FILES = 64  # descriptors kept open per SegmentFiles
_IOV_MAX = 1024  # buffers per pwritev (Linux's IOV_MAX)


def segments_path(store: Path) -> Path:
    return store.with_name(store.name + ".segments")


def _name(pipe: int, seg: int) -> str:
    return f"{pipe}-{seg}"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"  # then every start counts as the same boot


def _parse(name: str) -> tuple[int, int] | None:
    pipe, _, seg = name.partition("-")
    return (int(pipe), int(seg)) if pipe.isdigit() and seg.isdigit() else None


class SegmentFiles:
    """The segments of a store, as one connection's thread reads and writes them."""

    def __init__(self, store: Path, access: FileAccess) -> None:
        self.store = store
        self.dir = segments_path(store)
        self.access = access
        self._files: OrderedDict[tuple[int, int, bool], int] = OrderedDict()

    def _fd(self, pipe: int, seg: int, write: bool, create: bool = True) -> int:
        key = (pipe, seg, write)
        fd = self._files.get(key)
        if fd is not None:
            if os.fstat(fd).st_nlink:
                self._files.move_to_end(key)
                return fd
            # Removed meanwhile (by another daemon's tidy: a segment whose
            # commit failed, made again under the same name): open it anew.
            del self._files[key]
            os.close(fd)
        self._drop_removed()
        path = self.dir / _name(pipe, seg)
        if write:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not create:
                    raise
                self.access.create(path)  # with the store's mode and owner
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
                self.sync_dir()  # the new name survives a power cut with its bytes
        else:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._files[key] = fd
        while len(self._files) > _OPEN_FILES:
            os.close(self._files.popitem(last=False)[1])
        return fd

    def _drop_removed(self) -> None:
        """Close the files removed meanwhile (retention, a deleted pipe, by
        any daemon): an open descriptor would keep their disk space."""
        for key, fd in list(self._files.items()):
            if not os.fstat(fd).st_nlink:
                del self._files[key]
                os.close(fd)

    def sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- writing (the writer connection, under the write lock) ---------------
    def write(self, pipe: int, seg: int, pos: int, chunks: Sequence[bytes]) -> None:
        """Write *chunks* at *pos* of a segment: call before the commit that
        indexes them.  Raises OSError (disk full, ...)."""
        fd = self._fd(pipe, seg, write=True)
        for at in range(0, len(chunks), _IOV_MAX):
            part = chunks[at:at + _IOV_MAX]
            want = sum(map(len, part))
            done = os.pwritev(fd, part, pos)
            if done < want:  # short: write the rest the slow way
                rest = b"".join(part)[done:]
                while rest:
                    n = os.pwrite(fd, rest, pos + done)
                    done += n
                    rest = rest[n:]
            pos += want

    def sync(self, pipe: int, seg: int) -> None:
        """fdatasync a segment (gone already: nothing to sync)."""
        try:
            fd = self._fd(pipe, seg, write=True, create=False)
        except FileNotFoundError:
            return
        os.fdatasync(fd)

    @staticmethod
    def mark(db: sqlite3.Connection, synced: dict[tuple[int, int], int]) -> None:
        """Record that segments are on disk up to these ends (after sync())."""
        db.executemany(
            "INSERT INTO data.synced (pipe, seg, upto) VALUES (?, ?, ?)"
            " ON CONFLICT (pipe, seg) DO UPDATE SET upto = max(upto, excluded.upto)",
            [(pipe, seg, upto) for (pipe, seg), upto in synced.items()])

    # -- reading -----------------------------------------------------------
    def read(self, pipe: int, seg: int, pos: int, size: int) -> bytes | None:
        """*size* bytes at *pos* of a segment; None if they are not there (a
        segment removed meanwhile, or cut short: the record is unreadable)."""
        if size == 0:
            return b""
        try:
            data = os.pread(self._fd(pipe, seg, write=False), size, pos)
        except FileNotFoundError:
            return None
        return data if len(data) == size else None

    # -- upkeep (under the write lock) -----------------------------------------
    def tidy(self, db: sqlite3.Connection) -> int:
        """After a reboot, forget the records whose bytes may not have reached
        the disk; remove the segments no index row names, and cut each pipe's
        last segment to the end the index knows (bytes of a commit that never
        came).  Call inside a write transaction on the records: no one
        appends meanwhile.  Returns the number of files removed."""
        self._after_boot(db)
        by_pipe: dict[int, list[int]] = {}
        try:
            names = os.listdir(self.dir)
        except OSError as e:
            log.warning("cannot list %s: %s", self.dir, e)
            return 0
        for name in names:
            parsed = _parse(name)
            if parsed is not None:
                by_pipe.setdefault(parsed[0], []).append(parsed[1])
        removed = 0
        for pipe, segs in by_pipe.items():
            first = db.execute("SELECT seg FROM data.records WHERE pipe = ? ORDER BY id LIMIT 1",
                               (pipe,)).fetchone()
            last = db.execute("SELECT seg, pos + size FROM data.records WHERE pipe = ?"
                              " ORDER BY id DESC LIMIT 1", (pipe,)).fetchone()
            for seg in segs:
                # Segments only follow each other: one before the pipe's first
                # indexed record, or after its last, holds nothing indexed.
                if first is None or seg < first[0] or seg > last[0]:
                    self.remove(pipe, seg)
                    db.execute("DELETE FROM data.synced WHERE pipe = ? AND seg = ?", (pipe, seg))
                    removed += 1
                elif seg == last[0]:
                    path = self.dir / _name(pipe, seg)
                    try:
                        if path.stat().st_size > last[1]:
                            os.truncate(path, last[1])
                    except OSError as e:
                        log.warning("cannot cut %s to %d bytes: %s", path, last[1], e)
        return removed

    @staticmethod
    def _after_boot(db: sqlite3.Connection) -> None:
        boot = _boot_id()
        known = db.execute("SELECT id FROM data.boot").fetchone()
        if known is not None and known[0] == boot:
            return
        if known is not None:
            dropped = db.execute(
                "DELETE FROM data.records WHERE size > 0 AND pos + size > coalesce("
                "(SELECT upto FROM data.synced s WHERE s.pipe = records.pipe"
                " AND s.seg = records.seg), 0)").rowcount
            if dropped:
                log.warning("the machine restarted since the store was last used: %d records"
                            " never synced (no close or fsync acknowledged them) are dropped,"
                            " their bytes may not have reached the disk", dropped)
        db.execute("DELETE FROM data.boot")
        db.execute("INSERT INTO data.boot (id) VALUES (?)", (boot,))

    def remove(self, pipe: int, seg: int) -> None:
        """Remove a segment; a failure is logged (``tidy`` tries again later)."""
        for write in (False, True):
            fd = self._files.pop((pipe, seg, write), None)
            if fd is not None:
                os.close(fd)
        try:
            (self.dir / _name(pipe, seg)).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove segment %s: %s", self.dir / _name(pipe, seg), e)

    def remove_pipe(self, pipe: int) -> None:
        """Every segment of a deleted pipe (its ids are never used again)."""
        try:
            names = os.listdir(self.dir)
        except OSError as e:
            log.warning("cannot list %s: %s", self.dir, e)
            return
        for name in names:
            parsed = _parse(name)
            if parsed is not None and parsed[0] == pipe:
                self.remove(*parsed)

    def close(self) -> None:
        while self._files:
            os.close(self._files.popitem()[1])

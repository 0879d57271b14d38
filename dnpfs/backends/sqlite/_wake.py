"""Daemons sharing a store wake each other after they commit.

Without it each daemon learns of another's commit only at its next poll of
``PRAGMA data_version`` (every 5 ms: cross-mount latency p50 4 ms, against
0.02 ms for a local FIFO).  Two kinds of bell, both files beside the store
that every daemon watches with inotify:

- a pipe's bell, ``<store>.bells/<pipe name>``: rung after a commit of
  records to that pipe.  The inotify event names the file, so the watcher
  wakes that pipe's readers at once, without first looking in the store
  which pipes changed (that look, a thread hop and a few queries, was a
  fifth of the cross-mount latency: docs/decisions.md);
- the catalog's bell, ``<store>.wake``: rung when pipes were created or
  deleted; the watcher then looks at the store.

A bell is one byte written after the commit, so a daemon woken by it always
finds the commit (inotify on the WAL itself would fire before SQLite updates
the shared index, and a look then could see nothing and go back to sleep).
inotify only hears writes made on this machine's kernel: daemons sharing a
store on one host or in containers of one host.  The poll stays as a slow
safety net (a daemon of an older dnpfs, which rings only ``<store>.wake``),
and as the only way where inotify is not available.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ...access import FileAccess

log = logging.getLogger(__name__)

_IN_MODIFY = 0x2
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")
_OPEN_BELLS = 64  # struct inotify_event: wd, mask, cookie, len; then the name


def wake_path(store: Path) -> Path:
    return store.with_name(store.name + ".wake")


def bells_path(store: Path) -> Path:
    """The folder of the pipes' bells (pipe names are valid file names: names.py)."""
    return store.with_name(store.name + ".bells")


@dataclass
class Rung:
    """What wait() heard: pipes whose bell rang, whether the catalog's did."""

    pipes: set[str] = field(default_factory=set)
    catalog: bool = False

    def __bool__(self) -> bool:
        return self.catalog or bool(self.pipes)


class Wake:
    """The bells: ring() after a commit; wait() until someone rang (or a
    timeout).  ``available`` is False where inotify could not be set up."""

    def __init__(self, store: Path, access: FileAccess) -> None:
        self.path = wake_path(store)
        self.bells = bells_path(store)
        self.access = access
        access.create(self.path)
        access.make_dirs(self.bells)
        self._bell = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        # Pipes' bells kept open (ring() runs in one thread at a time: the
        # writer's; create and delete ring only the catalog's bell).
        self._pipe_bells: dict[str, int] = {}
        self._inotify = -1
        self._catalog_wd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
            wds = [libc.inotify_add_watch(fd, os.fsencode(p), _IN_MODIFY)
                   for p in (self.path, self.bells)]
            if min(wds) < 0:
                code = ctypes.get_errno()
                os.close(fd)
                raise OSError(code, "inotify_add_watch")
            self._inotify, self._catalog_wd = fd, wds[0]
        except (OSError, AttributeError) as e:
            log.warning("%s: no inotify (%s): other daemons' commits are seen by polling",
                        self.path, e)

    @property
    def available(self) -> bool:
        return self._inotify >= 0

    def ring(self, pipes: Iterable[str] = ()) -> None:
        """Tell every daemon watching the store (also this one) that *pipes*
        have new records; without *pipes*, that the catalog changed.  Any
        thread; a failure only costs latency, so it is logged, not raised."""
        if self._bell < 0:
            return  # closed
        try:
            names = list(pipes)
            if not names:
                os.pwrite(self._bell, b"\0", 0)
            for name in names:
                self._ring_pipe(name)
        except OSError as e:
            log.warning("%s: cannot ring: %s", self.path, e)

    def _ring_pipe(self, name: str) -> None:
        fd = self._pipe_bells.get(name)
        if fd is not None and not os.fstat(fd).st_nlink:
            # Removed (the pipe was deleted, perhaps made again with a new
            # bell file): a ring of the old file would reach no one.
            os.close(self._pipe_bells.pop(name))
            fd = None
        if fd is None:
            path = self.bells / name
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self.access.create(path)
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            self._pipe_bells[name] = fd
            while len(self._pipe_bells) > _OPEN_BELLS:
                os.close(self._pipe_bells.pop(next(iter(self._pipe_bells))))
        os.pwrite(fd, b"\0", 0)

    def forget(self, name: str) -> None:
        """Remove pipe *name*'s bell (the pipe was deleted)."""
        try:
            (self.bells / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("%s: cannot remove the bell of %s: %s", self.bells, name, e)

    async def wait(self, timeout: float) -> Rung:
        """Until a bell rang since the last wait, or *timeout* seconds (then
        an empty Rung)."""
        rung = Rung()
        if not self.available:  # no inotify, or closed
            await trio.sleep(timeout)
            return rung
        with trio.move_on_after(timeout):
            try:
                while not self._drain(rung):
                    await trio.lowlevel.wait_readable(self._inotify)
            except trio.ClosedResourceError:
                pass  # close(): the store is closing
        return rung

    def _drain(self, rung: Rung) -> bool:
        """Read every pending event into *rung*; True if there was one."""
        heard = False
        while self._inotify >= 0:
            try:
                events = os.read(self._inotify, 65536)
            except BlockingIOError:
                return heard
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            at = 0
            while at + _EVENT.size <= len(events):
                wd, _mask, _cookie, size = _EVENT.unpack_from(events, at)
                name = events[at + _EVENT.size:at + _EVENT.size + size].rstrip(b"\0")
                at += _EVENT.size + size
                heard = True
                if wd == self._catalog_wd or not name:
                    rung.catalog = True  # (an overflow, wd -1, lands here too)
                else:
                    rung.pipes.add(os.fsdecode(name))
        return heard

    def close(self) -> None:
        """Idempotent; ring() and wait() after it do nothing."""
        if self._inotify >= 0:
            trio.lowlevel.notify_closing(self._inotify)
            os.close(self._inotify)
            self._inotify = -1
        if self._bell >= 0:
            os.close(self._bell)
            self._bell = -1
        while self._pipe_bells:
            os.close(self._pipe_bells.popitem()[1])

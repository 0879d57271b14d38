"""Ending blocked syscalls when the calling process gets a signal.

pyfuse3 does not pass FUSE_INTERRUPT on, and the kernel waits for our reply
even for SIGKILL: a process blocked in read() on dnpfs stays in state D until
we answer.  So we watch for ourselves: while a syscall waits, its process's
pending signals are read from /proc/PID/status a few times a second, and a
pending signal that is not blocked cancels the wait with EINTR.  The kernel
then delivers the signal (Ctrl-C and kill -9 end the process at once).

Stop signals (Ctrl-Z) are left alone: answering EINTR would make `cat` fail
with "Interrupted system call" instead of resuming after `fg`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator

import trio

from .errors import Interrupted
from .metrics import METRICS

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCONT)
_IGNORED_MASK = sum(1 << (s - 1) for s in _STOP_SIGNALS)
MAX_INTERVAL = 0.5
CHECKED_FILES = 64  # readers' status files kept open for check()


def _mask(status: bytes, field: bytes) -> int:
    at = status.find(field)
    if at < 0:
        return 0
    end = status.find(b"\n", at)
    return int(status[at + len(field):end], 16)


def pending_signals(status: bytes) -> int:
    """Mask of signals pending and not blocked, from /proc/PID/status."""
    pending = _mask(status, b"SigPnd:") | _mask(status, b"ShdPnd:")
    return pending & ~_mask(status, b"SigBlk:") & ~_IGNORED_MASK


class _StatusFiles:
    """/proc/PID/status kept open per process: pread on an open file costs a
    third of open+read+close (1,000 waiting readers are scanned several
    times a second, and every read() is checked once), and the open file
    stays bound to that process even if its pid is reused: then it answers
    ESRCH and is reopened.  One instance per thread.  *limit*: keep at most
    that many open, the least recently opened closed first."""

    def __init__(self, limit: int | None = None) -> None:
        self._fds: dict[int, int] = {}
        self._limit = limit

    def scan(self, pids: list[int]) -> list[int | None]:
        for pid in self._fds.keys() - set(pids):
            os.close(self._fds.pop(pid))
        return [self.pending(pid) for pid in pids]

    def pending(self, pid: int) -> int | None:
        """Signals pending for *pid*; None if it is gone or unreadable."""
        fd = self._fds.get(pid)
        try:
            if fd is None:
                if self._limit is not None and len(self._fds) >= self._limit:
                    os.close(self._fds.pop(next(iter(self._fds))))
                fd = self._fds[pid] = os.open(f"/proc/{pid}/status", os.O_RDONLY)
            return pending_signals(os.pread(fd, 8192, 0))
        except OSError:
            if fd is not None:
                os.close(self._fds.pop(pid))  # dead (ESRCH): a new process may take the pid
            return None


class SignalWatcher:
    """Cancels waits whose process has a signal pending.  One per daemon."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._waits: dict[int, set[trio.CancelScope]] = {}
        self._wake = trio.Event()
        self._files = _StatusFiles()  # the scan's, in a worker thread
        self._checked = _StatusFiles(limit=CHECKED_FILES)  # check's, in the trio thread

    def check(self, pid: int) -> None:
        """Raise Interrupted if *pid* has a signal pending now.  Asked before a
        read takes bytes: a reader killed while blocked stays in the kernel
        until answered, and bytes taken for it in the moments before the scan
        notices would die with it (a local FIFO never hands them over)."""
        if pid <= 0:
            return
        # None (gone or unreadable): the scan decides, as before.
        if self._checked.pending(pid):
            METRICS.count("interrupted")
            raise Interrupted(f"pid {pid} has a signal pending")

    @contextlib.contextmanager
    def interruptible(self, pid: int) -> Iterator[None]:
        """Run the body; raise Interrupted if *pid* got a signal meanwhile.
        pid 0 (unknown caller, e.g. the kernel itself) is never interrupted."""
        if pid <= 0:
            yield
            return
        scope = trio.CancelScope()
        self._waits.setdefault(pid, set()).add(scope)
        self._wake.set()
        try:
            with scope:
                yield
        finally:
            scopes = self._waits.get(pid)
            if scopes is not None:
                scopes.discard(scope)
                if not scopes:
                    del self._waits[pid]
        if scope.cancelled_caught:
            METRICS.count("interrupted")
            raise Interrupted(f"pid {pid} has a signal pending")

    async def run(self) -> None:
        while True:
            if not self._waits:
                self._wake = trio.Event()
                await self._wake.wait()
            pids = list(self._waits)
            # Reading /proc for many processes is blocking file I/O: keep it off the loop.
            found = await trio.to_thread.run_sync(self._files.scan, pids)
            for pid, pending in zip(pids, found):
                if pending:
                    log.debug("pid %d has signals %#x pending: interrupting its wait", pid, pending)
                    for scope in list(self._waits.get(pid, ())):
                        scope.cancel()
            # Many waiting processes: check less often so the scan stays cheap
            # (a /proc read costs ~25 us of CPU; 1,000 blocked readers at 100 ms
            # took a quarter of a core), but often enough to answer a signal
            # within a second.
            await trio.sleep(min(MAX_INTERVAL, max(self.interval, len(pids) * 0.0005)))


_PF_EXITING, _PF_SIGNALED = 0x4, 0x400  # include/linux/sched.h


def dying_of_signal(pid: int) -> bool:
    """Is process *pid* exiting because a signal killed it?  Asked while it
    closes its files on the way out (a FUSE flush is answered before its
    close returns), when the kernel has set both flags (kernel/signal.c,
    get_signal).  False when it cannot tell (pid 0: another PID namespace)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    flags = int(stat.rpartition(b")")[2].split()[6])
    return flags & (_PF_EXITING | _PF_SIGNALED) == _PF_EXITING | _PF_SIGNALED

"""Ending blocked syscalls when the calling process gets a signal.

The kernel waits for our reply even on SIGKILL: a process blocked in read()
on dnpfs stays in state D until we answer.  When such a process gets a
signal, the kernel sends FUSE_INTERRUPT for its request; pyfuse3, with
dnpfs's patch (patches/, docs/decisions.md "Interrupts"), cancels the
request's ``pyfuse3.interruptible()`` blocks, and the wait ends with EINTR.
That works wherever the process lives: FUSE reports the pid of a caller in
another PID namespace as 0, but the interrupt names the request, not the pid.

Only waits are interruptible: work that stores or takes records runs to its
end, so a signal never leaves a record half taken.

A read also looks at its caller's pending signals in /proc just before it
takes bytes, when the caller is in our PID namespace: kill(2) marks the
signal pending at once, while the interrupt comes only once the killed
process runs again, and bytes handed to a process that dies in between
would be lost (a local FIFO never hands them over).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator

import pyfuse3

from .errors import Interrupted
from .metrics import METRICS

log = logging.getLogger(__name__)

# Stop signals (Ctrl-Z) pending are no reason to withhold bytes: the process
# will run again and read them.
_STOP_SIGNALS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCONT)
_IGNORED_MASK = sum(1 << (s - 1) for s in _STOP_SIGNALS)
CHECKED_FILES = 64  # callers' status files kept open for check()

# pyfuse3 as patched by dnpfs (patches/pyfuse3-*.patch): interrupts, the lock
# owner of reads and O_TRUNC as setattr (fs.py, the page-cache trap).
SUPPORTED = (all(hasattr(pyfuse3, name)
                 for name in ("interruptible", "interrupted", "read_lock_owner"))
             and hasattr(pyfuse3.Operations, "enable_atomic_o_trunc"))
UNSUPPORTED_MESSAGE = (
    f"pyfuse3 {pyfuse3.__version__} lacks dnpfs's patches (blocked readers could not be"
    " killed): install it with scripts/install")


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
    third of open+read+close, and the open file stays bound to that process
    even if its pid is reused: then it answers ESRCH and is reopened.
    *limit*: keep at most that many open, the least recently opened closed
    first."""

    def __init__(self, limit: int | None = None) -> None:
        self._fds: dict[int, int] = {}
        self._limit = limit

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


class Interrupts:
    """Where dnpfs asks whether the process behind a syscall got a signal.
    One per daemon."""

    def __init__(self) -> None:
        self._checked = _StatusFiles(limit=CHECKED_FILES)

    def check(self, pid: int) -> None:
        """Raise Interrupted if the request being handled was interrupted, or
        if *pid* (when we can see it: 0 is a caller in another PID
        namespace) has a signal pending now.  Asked before a read takes
        bytes."""
        if pyfuse3.interrupted() or (pid > 0 and self._checked.pending(pid)):
            METRICS.count("interrupted")
            raise Interrupted(f"pid {pid}: interrupted by a signal")

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Run the body (a wait); raise Interrupted if the kernel interrupts
        the request meanwhile, or did already."""
        with pyfuse3.interruptible() as scope:
            yield
        if scope.cancelled_caught:
            METRICS.count("interrupted")
            raise Interrupted("interrupted by a signal")


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

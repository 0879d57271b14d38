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
import signal
from collections.abc import Iterator

import trio

from .errors import Interrupted
from .metrics import METRICS

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCONT)
_IGNORED_MASK = sum(1 << (s - 1) for s in _STOP_SIGNALS)


def pending_signals(pid: int) -> int | None:
    """Mask of signals pending and not blocked for *pid*; None if it is gone."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line[:6] in (b"SigPnd", b"ShdPnd", b"SigBlk"):
                    key, _, value = line.partition(b":")
                    fields[key.decode()] = int(value.strip(), 16)
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return 0
    pending = fields.get("SigPnd", 0) | fields.get("ShdPnd", 0)
    return pending & ~fields.get("SigBlk", 0) & ~_IGNORED_MASK


class SignalWatcher:
    """Cancels waits whose process has a signal pending.  One per daemon."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._waits: dict[int, set[trio.CancelScope]] = {}
        self._wake = trio.Event()

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
            found = await trio.to_thread.run_sync(lambda: [pending_signals(p) for p in pids])
            for pid, pending in zip(pids, found):
                if pending:
                    log.debug("pid %d has signals %#x pending: interrupting its wait", pid, pending)
                    for scope in list(self._waits.get(pid, ())):
                        scope.cancel()
            # Many waiting processes: check less often so the scan stays cheap.
            await trio.sleep(max(self.interval, len(pids) * 0.0002))

"""pending_signals: which signals end a blocked read, from /proc/PID/status;
_StatusFiles: reading it for real processes."""

from __future__ import annotations

import os
import signal
import subprocess

from dnpfs.interrupts import _StatusFiles, pending_signals
from tests.util import proc_state, wait_for


def status(pnd: int = 0, shd: int = 0, blk: int = 0) -> bytes:
    return (b"Name:\tcat\nState:\tS (sleeping)\n"
            b"SigQ:\t0/63382\n"
            b"SigPnd:\t%016x\nShdPnd:\t%016x\nSigBlk:\t%016x\n"
            b"SigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n" % (pnd, shd, blk))


def bit(sig: int) -> int:
    return 1 << (sig - 1)


def test_nothing_pending():
    assert pending_signals(status()) == 0


def test_thread_and_process_wide_signals_count():
    assert pending_signals(status(pnd=bit(signal.SIGINT))) == bit(signal.SIGINT)
    assert pending_signals(status(shd=bit(signal.SIGKILL))) == bit(signal.SIGKILL)


def test_blocked_signals_do_not_interrupt():
    assert pending_signals(status(shd=bit(signal.SIGUSR1), blk=bit(signal.SIGUSR1))) == 0


def test_stop_signals_are_left_alone():
    # Ctrl-Z must stop the reader, not fail its read with EINTR.
    assert pending_signals(status(shd=bit(signal.SIGTSTP) | bit(signal.SIGCONT))) == 0


def test_status_files_follow_real_processes_and_close_what_they_no_longer_need():
    files = _StatusFiles(limit=2)
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        p = procs[0]
        assert files.pending(p.pid) == 0
        os.kill(p.pid, signal.SIGSTOP)  # a stopped process keeps SIGUSR1 pending
        # SIGSTOP takes effect only when the process next runs; a SIGUSR1 sent
        # before that is delivered first (lower number) and kills it.
        wait_for(lambda: proc_state(p.pid) == "T", 10, what="the process to stop")
        os.kill(p.pid, signal.SIGUSR1)
        assert files.pending(p.pid) == bit(signal.SIGUSR1)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert files.pending(p.pid) is None  # gone: its file is closed, not kept
        assert files.pending(p.pid) is None
        assert [files.pending(q.pid) for q in procs[1:]] == [0, 0]
        assert files.pending(os.getpid()) == 0  # a third live one: the oldest file goes
        assert len(files._fds) == 2
    finally:
        for q in procs:
            q.kill()
            q.wait()

"""pending_signals: which signals end a blocked read, from /proc/PID/status."""

from __future__ import annotations

import signal

from dnpfs.interrupts import pending_signals


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

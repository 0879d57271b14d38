"""One dnpfs daemon: what the tests and the benchmarks mount.

`Mount` runs `dnpfs mount` exactly as a user does: in the background, where
the command forks the daemon and returns once the mount answers.  The test
still holds the daemon as a child: a small adopter process (`python -m
tests.mount ...`, below) makes itself the subreaper of `dnpfs mount`, so the
daemon is reparented to it when the command exits, and the adopter exits with
the daemon's status.  `Mount(..., foreground=True)` runs `dnpfs mount
--foreground` for tests about foreground mode (systemd, containers, a PID
namespace of its own, where the daemon must be the namespace's first process).
tests/conftest.py builds its fixtures on it and benchmarks/rig.py its daemons,
so nothing here may import pytest.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from .util import mounted, wait_for

ROOT = Path(__file__).resolve().parent.parent
DNPFS = [sys.executable, "-m", "dnpfs"]


class Daemon:
    """The daemonized dnpfs as the Popen-like ``Mount.proc``: its pid, signals
    to it, and its exit status through the adopter that waits for it."""

    def __init__(self, adopter: subprocess.Popen, pid: int) -> None:
        self.adopter = adopter
        self.pid = pid

    @property
    def returncode(self) -> int | None:
        return self.adopter.returncode

    def poll(self) -> int | None:
        return self.adopter.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.adopter.wait(timeout)

    def send_signal(self, sig: int) -> None:
        if self.adopter.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Mount:
    """One dnpfs daemon, started as users start it (see above), logging to a
    file.

    start() returns once the root answers; it raises ``error`` if the daemon
    exits first or does not answer within ``ready_timeout`` seconds.  A mount
    can start again after kill(): `dnpfs mount` cleans up the stale mount.
    """

    name = "dnpfs"  # in error messages
    error: type[Exception] = AssertionError
    ready_timeout = 30.0
    stop_timeout = 10.0

    def __init__(self, path: Path, backend_args: list[str], log: Path, extra: list[str] = (),
                 wrap=None, foreground: bool = False):
        self.path = path
        self.backend_args = list(backend_args)
        self.log = log
        self.extra = list(extra)
        self.wrap = wrap or (lambda argv: argv)  # e.g. run inside a host's network namespace
        self.foreground = foreground
        self.proc: subprocess.Popen | Daemon | None = None

    @classmethod
    def under(cls, folder: Path, name: str, backend_args: list[str], extra: list[str] = (),
              wrap=None, foreground: bool = False) -> Mount:
        """A mount on folder/name that logs to folder/name.log (not started)."""
        return cls(folder / name, backend_args, folder / f"{name}.log", extra, wrap, foreground)

    def argv(self) -> list[str]:
        """The `dnpfs mount` command line (wrapped, e.g. in `ip netns exec`)."""
        if self.foreground:
            return self.wrap([*DNPFS, "mount", "--foreground", *self.backend_args, *self.extra,
                              str(self.path)])
        return self.wrap([*DNPFS, "mount", "--log-file", str(self.log), *self.backend_args,
                          *self.extra, str(self.path)])

    def start(self) -> Mount:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if e.errno != errno.ENOTCONN:  # the stale mount of a killed daemon
                raise
        if self.foreground:
            with open(self.log, "ab") as logf:
                self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=ROOT)
        else:
            self.proc = self._adopt()
        wait_for(self._ready, self.ready_timeout, error=self.error,
                 what=f"{self.name} to mount {self.path} (log: {self.log})")
        return self

    def _adopt(self) -> Daemon:
        """`dnpfs mount` through the adopter; returns once the command did."""
        with open(self.log, "ab") as logf:
            adopter = subprocess.Popen([sys.executable, "-m", "tests.mount", *self.argv()],
                                       stdout=subprocess.PIPE, stderr=logf,
                                       stdin=subprocess.DEVNULL, cwd=ROOT)
        try:
            if select.select([adopter.stdout], [], [], self.ready_timeout)[0]:
                line = adopter.stdout.readline().split()  # b"daemon PID", or b"" at exit
            else:
                line = []
        finally:
            adopter.stdout.close()
        if line[:1] != [b"daemon"]:
            try:
                adopter.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                adopter.kill()
            raise self.error(f"`dnpfs mount` exited {adopter.returncode}; log {self.log}:\n"
                             f"{self.log_text()[-4000:]}")
        return Daemon(adopter, int(line[1]))

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise self.error(f"{self.name} exited {self.proc.returncode}; log {self.log}:\n"
                             f"{self.log_text()[-4000:]}")
        return mounted(self.path) and self._answers()

    def _answers(self) -> bool:
        """The daemon serves its root (a mount entry alone is not enough)."""
        try:
            os.getxattr(self.path, "user.dnpfs.pid")
            return True
        except OSError:
            return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> int | None:
        """Signal the daemon, wait for it (kill -9 after *timeout*), and unmount
        whatever is left, also the stale mount of a kill()."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(self.stop_timeout if timeout is None else timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code, self.proc = self.proc.returncode, None
        if mounted(self.path):
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        return code

    def kill(self) -> None:
        """kill -9: leaves a stale mount behind, as a crash would."""
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _adopt_and_wait(argv: list[str]) -> int:
    """The adopter: run *argv* (`dnpfs mount`, which forks the daemon and
    exits), become the daemon's parent, print "daemon PID", and exit as the
    daemon does (its code, or killed by its signal)."""
    PR_SET_CHILD_SUBREAPER = 36
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # signals are for the daemon (Daemon.send_signal)
    code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr).returncode
    if code != 0:
        return code
    me = os.getpid()
    with open(f"/proc/{me}/task/{me}/children") as f:
        children = [int(c) for c in f.read().split()]
    if not children:
        print("`dnpfs mount` returned 0 but left no daemon", file=sys.stderr)
        return 1
    print(f"daemon {children[0]}", flush=True)
    sys.stdout.close()
    while True:
        pid, status = os.waitpid(-1, 0)  # the daemon, and anything else left to us
        if pid == children[0]:
            break
    if os.WIFSIGNALED(status):
        if os.WTERMSIG(status) != signal.SIGKILL:  # whose action cannot be set
            signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(me, os.WTERMSIG(status))  # exit as the daemon did: Popen sees -SIGNAL
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(_adopt_and_wait(sys.argv[1:]))

"""One dnpfs daemon as a child process: what the tests and the benchmarks mount.

`Mount` runs `dnpfs mount --foreground` exactly as a user would and waits
until the mount answers.  tests/conftest.py builds its fixtures on it and
benchmarks/rig.py its daemons, so nothing here may import pytest.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

from .util import mounted, wait_for

ROOT = Path(__file__).resolve().parent.parent
DNPFS = [sys.executable, "-m", "dnpfs"]


class Mount:
    """One dnpfs daemon in the foreground, logging to a file.

    start() returns once the root answers; it raises ``error`` if the daemon
    exits first or does not answer within ``ready_timeout`` seconds.  A mount
    can start again after kill(): `dnpfs mount` cleans up the stale mount.
    """

    name = "dnpfs"  # in error messages
    error: type[Exception] = AssertionError
    ready_timeout = 30.0
    stop_timeout = 10.0

    def __init__(self, path: Path, backend_args: list[str], log: Path, extra: list[str] = (),
                 wrap=None):
        self.path = path
        self.backend_args = list(backend_args)
        self.log = log
        self.extra = list(extra)
        self.wrap = wrap or (lambda argv: argv)  # e.g. run inside a host's network namespace
        self.proc: subprocess.Popen | None = None

    @classmethod
    def under(cls, folder: Path, name: str, backend_args: list[str], extra: list[str] = (),
              wrap=None) -> Mount:
        """A mount on folder/name that logs to folder/name.log (not started)."""
        return cls(folder / name, backend_args, folder / f"{name}.log", extra, wrap)

    def argv(self) -> list[str]:
        return self.wrap([*DNPFS, "mount", "--foreground", *self.backend_args, *self.extra,
                          str(self.path)])

    def start(self) -> Mount:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if e.errno != errno.ENOTCONN:  # the stale mount of a killed daemon
                raise
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=ROOT)
        wait_for(self._ready, self.ready_timeout, error=self.error,
                 what=f"{self.name} to mount {self.path} (log: {self.log})")
        return self

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

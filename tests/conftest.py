"""Shared fixtures: real dnpfs daemons on real mountpoints.

A `Mount` runs `dnpfs mount --foreground` as a child process, exactly as a
user would, and the tests drive it with real programs (cat, printf, dd, head)
and plain Python file I/O.  Two mounts of one store stand in for two hosts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .util import mounted, wait_for

ROOT = Path(__file__).resolve().parent.parent
DNPFS = [sys.executable, "-m", "dnpfs"]


class Mount:
    """One dnpfs daemon in the foreground, logging to a file."""

    def __init__(self, path: Path, backend_args: list[str], log: Path, extra: list[str] = (),
                 wrap=None):
        self.path = path
        self.backend_args = list(backend_args)
        self.log = log
        self.extra = list(extra)
        self.wrap = wrap or (lambda argv: argv)  # e.g. run inside a host's network namespace
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mount:
        self.path.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.wrap([*DNPFS, "mount", "--foreground", *self.backend_args, *self.extra,
                       str(self.path)]),
            stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        logf.close()
        wait_for(lambda: self._ready(), timeout=30, what=f"mount {self.path}")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()}")
        if not mounted(self.path):
            return False
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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:  # never started, or killed: a stale mount may be left
            if mounted(self.path):
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if mounted(self.path):
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        code, self.proc = self.proc.returncode, None
        return code

    def kill(self) -> None:
        """kill -9: leaves a stale mount behind, as a crash would."""
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def store(tmp_path) -> Path:
    return tmp_path / "store" / "dnpfs.sqlite"


@pytest.fixture
def make_mount(tmp_path, request):
    """make_mount(backend_args=None, name=..., extra=[...]) -> started Mount."""
    mounts: list[Mount] = []

    def make(backend_args=None, name=None, extra=()):
        if backend_args is None:
            backend_args = ["--store", str(tmp_path / "store" / "dnpfs.sqlite")]
        name = name or f"mnt{len(mounts)}"
        m = Mount(tmp_path / name, backend_args, tmp_path / f"{name}.log", extra)
        mounts.append(m)
        return m.start()

    yield make
    for m in mounts:
        m.stop()


def _kafka_dev(*args, timeout):
    return subprocess.run([str(ROOT / "scripts" / "kafka-dev"), *args], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def kafka_bootstrap():
    """The dev broker's address.  `scripts/kafka-dev start` reuses a running
    broker or starts one (fetching the jars the first time) and leaves it
    running for the next session; DNPFS_KAFKA_STOP_AFTER_TESTS=1 stops a
    broker this session started.  DNPFS_KAFKA_BOOTSTRAP=host:port uses that
    broker instead."""
    addr = os.environ.get("DNPFS_KAFKA_BOOTSTRAP")
    if addr:
        yield addr
        return
    was_running = _kafka_dev("status", timeout=30).returncode != 3
    r = _kafka_dev("start", timeout=900)
    if r.returncode != 0 or not r.stdout.strip():
        pytest.fail(f"scripts/kafka-dev start failed (exit {r.returncode}):\n{r.stderr}{r.stdout}",
                    pytrace=False)
    yield r.stdout.strip().splitlines()[-1].strip()
    if not was_running and os.environ.get("DNPFS_KAFKA_STOP_AFTER_TESTS") == "1":
        _kafka_dev("stop", timeout=120)

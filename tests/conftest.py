"""Shared fixtures: real dnpfs daemons on real mountpoints.

A `Mount` (tests/mount.py) runs `dnpfs mount` daemonized, exactly as a user
would (the test still holds the daemon as a child), and the tests drive it
with real programs (cat, printf, dd, head) and plain Python file I/O.  Two
mounts of one store stand in for two hosts.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .mount import DNPFS, ROOT, Mount  # noqa: F401 (test modules import them from here)


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
        m = Mount.under(tmp_path, name or f"mnt{len(mounts)}", backend_args, extra)
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

"""Helpers for driving real programs against real mounts."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

STRACE = shutil.which("strace")  # fault injection at the daemon's syscalls; tests skip without it


def mounted(path: Path) -> bool:
    target = os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition",
             error: type[Exception] = AssertionError):
    """Poll *predicate* until it returns something true, and return that; raise
    *error* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run(cmd, *, input: bytes | None = None, timeout: float = 20, check: bool = True, shell=False):
    """Run a real program; return CompletedProcess with bytes output."""
    result = subprocess.run(
        cmd, input=input, capture_output=True, timeout=timeout, shell=shell,
        executable="/bin/bash" if shell else None,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd!r} exited {result.returncode}: {result.stderr.decode(errors='replace')}")
    return result


def spawn(cmd, *, shell=False, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, shell=shell,
        executable="/bin/bash" if shell else None, **kw,
    )


def proc_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def wait_blocked(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Wait until *proc* sits in a syscall (state S or D) for a moment."""
    def blocked():
        return proc.poll() is None and proc_state(proc.pid) in ("S", "D")
    wait_for(blocked, timeout, what=f"pid {proc.pid} to block")
    time.sleep(0.2)
    assert proc.poll() is None, f"process ended early: {proc.communicate()}"


def peek_until(proc: subprocess.Popen, want: bytes, timeout: float) -> bytes:
    """Read *proc*'s stdout as it comes until *want* is in it; return what was read."""
    import select

    got = b""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while want not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {want!r}; got {got!r}")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"output ended before {want!r}; got {got!r}")
            got += chunk
    return got


def membership(path, group: str = "default") -> str | None:
    """This mount's part in the pipe's reader group (user.dnpfs.membership.*):
    "reading", "standby" or "joining" on Kafka; None without one (no reader
    of the group here, or a store where every mount reads)."""
    try:
        return os.getxattr(path, f"user.dnpfs.membership.{group}").decode()
    except OSError:
        return None

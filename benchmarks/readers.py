"""What a reading daemon holds for readers that keep their files open: the
procedure shared by the "readers" scenario and tests/kafka/test_fetch_budget.py.

Pipes are filled through one mount and read through another, so the reading
daemon holds nothing of the writes.  Readers open FEW pipes, read READ bytes
of each and keep them open; then as many more pipes, up to MANY.  The
reading daemon's RSS is taken at start and once it settles after each wave.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

MiB = 1 << 20
FEW, MANY = 100, 1000
BIG, SMALL = 8 << 20, 512 << 10  # the first FEW pipes hold BIG bytes, the others SMALL
READ = 64 << 10

# For each line of paths (tab-separated) on stdin: opens them, reads READ
# bytes from each, says "ready"; keeps every file open until stdin ends.
HOLDER = """
import os, sys
READ = int(sys.argv[1])
fds = []
for line in sys.stdin:
    for path in line.rstrip("\\n").split("\\t"):
        fd = os.open(path, os.O_RDONLY)
        got = 0
        while got < READ:
            chunk = os.read(fd, READ - got)
            assert chunk, path
            got += len(chunk)
        fds.append(fd)
    print("ready", flush=True)
"""

# Writes argv[1] bytes to each pipe named after it, in 128 KiB writes.
FILLER = """
import os, sys
block = os.urandom(128 << 10)
for path in sys.argv[2:]:
    with open(path, "wb", buffering=0) as f:
        for _ in range(int(sys.argv[1]) // len(block)):
            f.write(block)
"""


def fill(paths: list[Path], size: int, workers: int = 4) -> None:
    fillers = [subprocess.Popen([sys.executable, "-c", FILLER, str(size),
                                 *map(str, paths[i::workers])]) for i in range(workers)]
    for p in fillers:
        if p.wait(timeout=900) != 0:
            raise RuntimeError(f"filling pipes failed (exit {p.returncode})")


def rss_mib(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of *pid*, in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def settled_rss(pid: int, quiet: float = 5.0, timeout: float = 120.0) -> float:
    """The daemon's RSS once it has not grown for *quiet* seconds (its
    members fetched what their shares allow)."""
    deadline = time.monotonic() + timeout
    top, since = 0.0, time.monotonic()
    while time.monotonic() < deadline:
        rss, _ = rss_mib(pid)
        if rss > top + 1:
            top, since = rss, time.monotonic()
        elif time.monotonic() - since > quiet:
            return rss
        time.sleep(0.5)
    return rss_mib(pid)[0]


def hold(reader_pid: int, waves: list[list[Path]], read: int = READ) -> dict:
    """Open each wave of pipes (reading *read* bytes of each, keeping them
    open) and take the reading daemon's RSS: {"start", "waves": [{"readers",
    "rss", "peak"}]} in MiB."""
    start, _ = rss_mib(reader_pid)
    out: dict = {"start": round(start, 1), "waves": []}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(read)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        readers = 0
        for wave in waves:
            holder.stdin.write("\t".join(map(str, wave)) + "\n")
            holder.stdin.flush()
            if holder.stdout.readline() != "ready\n":
                raise RuntimeError("the readers did not get their bytes")
            readers += len(wave)
            rss = settled_rss(reader_pid)
            _, peak = rss_mib(reader_pid)
            out["waves"].append({"readers": readers, "rss": round(rss, 1),
                                 "peak": round(peak, 1)})
    finally:
        holder.stdin.close()
        holder.wait(timeout=120)
    return out

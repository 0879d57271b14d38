"""The mount's fetch budget (--fetch-mib): what a reading daemon holds of
records fetched ahead of its readers, whatever the number of readers.

Issue #26, item 3: 100 readers on 100 pipes of 8 MB, each reading 64 KiB and
keeping its file open, took the reading daemon to 1,029 MiB.  Pipes are filled
through one mount and read through another, so the reading daemon holds
nothing of the writes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid

import pytest

from ..util import wait_for

pytestmark = pytest.mark.kafka

BUDGET_MIB = 64  # the default --fetch-mib
FEW, MANY = 100, 1000
BIG, SMALL = 8 << 20, 512 << 10  # the first FEW pipes hold BIG bytes, the others SMALL
READ = 64 << 10
MAX_RSS_MIB = 300

# For each line of paths (tab-separated) on stdin: opens them, reads READ
# bytes from each, says "ready"; keeps every file open until stdin ends.
HOLDER = f"""
import os, sys
fds = []
for line in sys.stdin:
    for path in line.rstrip("\\n").split("\\t"):
        fd = os.open(path, os.O_RDONLY)
        got = 0
        while got < {READ}:
            chunk = os.read(fd, {READ} - got)
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


def fill(paths, size: int, workers: int = 4) -> None:
    fillers = [subprocess.Popen([sys.executable, "-c", FILLER, str(size), *map(str, paths[i::workers])])
               for i in range(workers)]
    for p in fillers:
        assert p.wait(timeout=900) == 0


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


def test_readers_holding_their_files_open_stay_within_the_fetch_budget(make_mount,
                                                                        kafka_bootstrap):
    prefix = f"fb{uuid.uuid4().hex[:8]}."
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", prefix]
    writer = make_mount(args, name="writer")
    names = [f"p{i:04d}" for i in range(MANY)]
    for name in names:
        os.mkfifo(writer / name)
    try:
        fill([writer / n for n in names[:FEW]], BIG)
        fill([writer / n for n in names[FEW:]], SMALL)
        reader = make_mount(args, name="reader")  # --fetch-mib 64, the default
        wait_for(lambda: all(os.path.exists(reader / n) for n in names), 30, what="pipes")
        start, _ = rss_mib(reader.pid)
        holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            # A named group: the fetch budget is the consumer groups' (the
            # default group is a share group, which fetches only for a read).
            holder.stdin.write("\t".join(str(reader / f"{n}@g") for n in names[:FEW]) + "\n")
            holder.stdin.flush()
            assert holder.stdout.readline() == "ready\n"
            few = settled_rss(reader.pid)
            _, few_peak = rss_mib(reader.pid)
            holder.stdin.write("\t".join(str(reader / f"{n}@g") for n in names[FEW:]) + "\n")
            holder.stdin.flush()
            assert holder.stdout.readline() == "ready\n"
            many = settled_rss(reader.pid)
            _, many_peak = rss_mib(reader.pid)
        finally:
            holder.stdin.close()
            holder.wait(timeout=120)
        print(f"reading daemon: {start:.0f} MiB at start; {FEW} readers holding their files"
              f" open: {few:.0f} MiB (peak {few_peak:.0f}); {MANY}: {many:.0f} MiB"
              f" (peak {many_peak:.0f})")
        assert few_peak < MAX_RSS_MIB, (start, few, few_peak)
        # Target (issue #26): no more than the budget.  Measured +125 MiB with
        # the buffers bounded; a member's consumer and connections cost
        # memory of their own (docs/benchmarks.md, "Memory of readers").
        # Without the budget each of the 900 would hold up to ~448 KiB more.
        assert many - few <= 3 * BUDGET_MIB, (start, few, many)
    finally:
        for name in names:  # give the shared broker its disk back
            with contextlib.suppress(OSError):
                os.unlink(writer / name)

"""Bulk throughput on the embedded store, next to a local kernel FIFO.

    .venv/bin/python -m benchmarks.embedded [--mib 1024] [--bs 1M] [--json FILE]

Moves the same bytes with `dd bs=1M` into a pipe and `cat` out of it:
first through a local FIFO (the ceiling), then from one dnpfs mount to a
second mount of the same store (two daemons, as two containers sharing a
volume).  Prints MiB/s for each and their ratio.  Not a test: numbers depend
on the machine; the ratio is what docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


class Daemon:
    def __init__(self, mountpoint: Path, store: Path, log: Path):
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.path = mountpoint
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dnpfs", "mount", "--foreground", "--store", str(store),
             str(mountpoint)],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while not _mounted(mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dnpfs did not mount; see {log}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def transfer(src: str, dst_path: str, reader_path: str, mib: int, bs: str) -> tuple[float, str]:
    """dd from /dev/urandom-derived file into dst, cat out of reader; seconds, sha256."""
    reader = subprocess.Popen(f"cat {reader_path} | sha256sum", shell=True,
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.2)
    start = time.monotonic()
    subprocess.run(["dd", f"if={src}", f"of={dst_path}", f"bs={bs}", "status=none"], check=True)
    out, _ = reader.communicate()
    return time.monotonic() - start, out.split()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--bs", default="1M")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="dnpfs-bench-") as tmp:
        tmp = Path(tmp)
        src = tmp / "source.bin"
        print(f"making {args.mib} MiB of test data ...", flush=True)
        with open(src, "wb") as f:
            block = os.urandom(1 << 20)
            for i in range(args.mib):
                f.write(block[i % 256:] + block[: i % 256])
        expected = hashlib.sha256(src.read_bytes()).hexdigest()

        fifo = tmp / "local.fifo"
        os.mkfifo(fifo)
        print("local FIFO ...", flush=True)
        fifo_s, digest = transfer(str(src), str(fifo), str(fifo), args.mib, args.bs)
        assert digest == expected, "local FIFO corrupted data?"

        store = tmp / "store.sqlite"
        a = Daemon(tmp / "a", store, tmp / "a.log")
        b = Daemon(tmp / "b", store, tmp / "b.log")
        try:
            os.mkfifo(a.path / "bulk")
            print("dnpfs, mount A -> mount B ...", flush=True)
            cpu0 = a.cpu_seconds() + b.cpu_seconds()
            dn_s, digest = transfer(str(src), str(a.path / "bulk"), str(b.path / "bulk"),
                                    args.mib, args.bs)
            cpu = a.cpu_seconds() + b.cpu_seconds() - cpu0
            rss = max(a.peak_rss_mib(), b.peak_rss_mib())
            assert digest == expected, "dnpfs delivered different bytes"
        finally:
            a.stop()
            b.stop()

    gib = args.mib / 1024
    result = {
        "mib": args.mib,
        "bs": args.bs,
        "local_fifo_mib_s": round(args.mib / fifo_s, 1),
        "dnpfs_embedded_mib_s": round(args.mib / dn_s, 1),
        "ratio": round(fifo_s / dn_s, 3),
        "daemon_cpu_s_per_gib": round(cpu / gib, 2),
        "daemon_peak_rss_mib": round(rss, 1),
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

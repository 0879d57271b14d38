"""Two dnpfs trees side by side on small writes (dd bs=100), next to nullfs, interleaved.

    python -m benchmarks.small_ab --a-tree /tmp/dnpfs-base [--b-tree .] [--lines 50000]
        [--rounds 6] [--kafka]

Each side runs its own tree's daemons (PYTHONPATH): two on one store of its
own, as the `embedded` scenario does, or with --kafka one daemon on the
broker (scripts/kafka-dev), as the `small` scenario writes.  Each round
writes LINES lines of 100 bytes with `dd bs=100` into a fresh pipe of each
side and into the store-nothing filesystem (benchmarks/nullfs.py), in an
order that alternates (A B N, N B A, ...), so that the machine's load falls
on all alike.  dd returns when close() did (every record stored).  Prints,
per round, writes/s, each side's ratio to nullfs in that round and the
writing daemon's CPU per write; then medians.  Run it once with the same
tree on both sides first: that A/A ratio is the tool's own error on the day.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from . import ab
from .rig import Admin, NullMount, kafka_bootstrap, proc_cpu_seconds


def _dd(lines: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={lines}", f"of={dst}", "bs=100", "status=none"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = ab.tree_arguments(__doc__)
    ap.add_argument("--lines", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--kafka", action="store_true",
                    help="Kafka mounts instead of the embedded store")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (stores, logs)")
    a = ap.parse_args()
    work = ab.work_folder("smab")
    lines = work / "lines"
    with open(lines, "w") as f:
        for i in range(a.lines):
            f.write(f"{i:010d} {'x' * 88}\n")
    prefix = f"smab-{secrets.token_hex(4)}."
    roles = ("w",) if a.kafka else ("w", "r")

    def backend(side: str) -> list[str]:
        if a.kafka:
            return ["--kafka", kafka_bootstrap(), "--topic-prefix", prefix + side + ".",
                    "--share-groups", "never"]
        return ["--store", str(work / f"store-{side}" / "dnpfs.sqlite")]

    mounts = ab.side_mounts(work, roles, backend,
                            ab.on_trees(a))
    null = NullMount(work / "null", work / "null.log")
    results: dict[str, list[ab.Sample]] = {}  # side -> (writes/s, CPU s per write)
    try:
        with ab.running([*mounts.values(), null], work, a.keep):
            for i in range(a.rounds):
                for side in ab.in_turn("ABN", i):
                    if side == "N":
                        pid, dst = null.pid, null.path / "sink"
                    else:
                        pid, dst = mounts[side, "w"].pid, mounts[side, "w"].path / f"small{i}"
                        os.mkfifo(dst)
                    cpu0 = proc_cpu_seconds(pid)
                    seconds = _dd(lines, dst)
                    cpu = proc_cpu_seconds(pid) - cpu0
                    results.setdefault(side, []).append((a.lines / seconds, cpu / a.lines))
                    if side != "N":
                        os.unlink(dst)
                n = results["N"][-1][0]
                print(f"round {i + 1}/{a.rounds} (load {os.getloadavg()[0]:.1f}): nullfs"
                      f" {n:,.0f}/s" + "".join(
                          f", {s} {results[s][-1][0]:,.0f}/s ({results[s][-1][0] / n:.2f}x,"
                          f" {results[s][-1][1] * 1e6:.0f} us)" for s in "AB"), flush=True)
    finally:
        if a.kafka:
            Admin(kafka_bootstrap()).delete_prefix(prefix)
    null_rates = [x for x, _ in results.get("N", [])]
    for side in "ABN":
        xs = results.get(side, [])
        if not xs:
            continue
        line = ab.median_text(side, xs, "{:8,.0f} writes/s", "{:4.0f} us CPU/write", 1e6)
        if side != "N":
            line += "  /" + ab.ratio_text("nullfs", ab.ratios(xs, null_rates), "round")
        print(line)
    if results.get("A") and results.get("B"):
        print(ab.ratio_text("B/A", ab.b_over_a(results["A"], results["B"]), "round"))


if __name__ == "__main__":
    sys.exit(main())

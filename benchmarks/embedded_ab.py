"""Two dnpfs trees side by side on the embedded store's bulk through, interleaved.

    python -m benchmarks.embedded_ab --a-tree /tmp/dnpfs-base [--b-tree .] [--mib 1024] [--pairs 6]

Each side runs two daemons of its own tree (PYTHONPATH) on one store of its
own, as the `embedded` scenario does: `cat` waits on mount 2 while `dd bs=1M`
writes MIB MiB into mount 1.  Each pair measures the local FIFO (`dd | cat`)
and both sides back to back, in alternating order (AB, BA, ...), so that the
machine's load, which moves a lot on a shared machine, falls on both alike;
every ratio is to the FIFO of the same pair.  Prints MiB/s, the daemons' CPU
s/GiB, each side's ratio to the FIFO and B/A per pair, with medians.  Run
it once with the same tree on both sides first: that A/A ratio is the
tool's own error on the day.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time

from . import ab
from .rig import MiB, proc_cpu_seconds


def _through(reader: str, writer: tuple, size: int) -> float:
    """Seconds from dd's start until `cat` has handed over the last byte (as
    the suite's *through* step counts: a close's sync is not in it)."""
    cat = subprocess.Popen(["cat", reader], stdout=subprocess.PIPE, bufsize=0)
    got, last = 0, [0.0]

    def drain() -> None:
        nonlocal got
        while chunk := cat.stdout.read(1 << 20):
            got += len(chunk)
            last[0] = time.perf_counter()

    counter = threading.Thread(target=drain)
    counter.start()
    time.sleep(0.3)  # the reader waits first
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={writer[0]}", f"of={writer[1]}", "bs=1M", "status=none"],
                   check=True)
    counter.join()
    cat.wait()
    if got != size:
        raise SystemExit(f"{reader}: read {got} bytes of {size}")
    return last[0] - t0


def main() -> None:
    ap = ab.tree_arguments(__doc__)
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (stores, logs)")
    a = ap.parse_args()
    size = a.mib * MiB
    work = ab.work_folder("emab")
    src = work / "src"
    subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={a.mib}"],
                   check=True, capture_output=True)
    mounts = ab.side_mounts(work, ("w", "r"),
                            lambda side: ["--store", str(work / f"store-{side}" / "dnpfs.sqlite")],
                            ab.on_trees(a))
    results: dict[str, list[ab.Sample]] = {}
    with ab.running(mounts.values(), work, a.keep):
        fifo = work / "fifo"
        os.mkfifo(fifo)
        for i in range(a.pairs):
            seconds = _through(str(fifo), (src, fifo), size)
            results.setdefault("FIFO", []).append((a.mib / seconds, 0.0))
            for side in ab.in_turn("AB", i):
                writer, reader = mounts[side, "w"], mounts[side, "r"]
                pipe = f"through{i}"
                os.mkfifo(writer.path / pipe)
                cpu0 = proc_cpu_seconds(writer.pid) + proc_cpu_seconds(reader.pid)
                seconds = _through(str(reader.path / pipe), (src, writer.path / pipe), size)
                cpu = proc_cpu_seconds(writer.pid) + proc_cpu_seconds(reader.pid) - cpu0
                results.setdefault(side, []).append((a.mib / seconds, cpu))
                os.unlink(writer.path / pipe)
            fifo_rate = results["FIFO"][-1][0]
            print(f"pair {i + 1}/{a.pairs} (load {os.getloadavg()[0]:.1f}): FIFO {fifo_rate:.0f}"
                  + "".join(f", {s} {results[s][-1][0]:.0f} ({results[s][-1][0] / fifo_rate:.2f}x)"
                            for s in "AB") + " MiB/s", flush=True)
    fifo = [x for x, _ in results.get("FIFO", [])]
    for side in "AB":
        xs = results.get(side, [])
        if not xs:
            continue
        print(ab.median_text(side, xs, "{:6.0f} MiB/s", "{:5.2f} daemon CPU s/GiB", 1024 / a.mib)
              + "  /" + ab.ratio_text("FIFO", ab.ratios(xs, fifo), "pair"))
    if results.get("A") and results.get("B") and len(results["A"]) == len(results["B"]):
        print(ab.ratio_text("B/A", ab.b_over_a(results["A"], results["B"]), "pair"))
    print(f"FIFO median {statistics.median(fifo):.0f} MiB/s, all {[round(f) for f in fifo]}")


if __name__ == "__main__":
    sys.exit(main())

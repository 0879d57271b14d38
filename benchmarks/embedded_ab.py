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

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .rig import ROOT, MiB, in_tree, proc_cpu_seconds
from tests.mount import Mount


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a-tree", required=True, type=Path, help="dnpfs source tree of side A")
    ap.add_argument("--b-tree", type=Path, default=ROOT, help="of side B (default: this one)")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (stores, logs)")
    a = ap.parse_args()
    trees = {"A": a.a_tree.resolve(), "B": a.b_tree.resolve()}
    size = a.mib * MiB
    work = Path(tempfile.mkdtemp(prefix="dnpfs-emab-"))
    src = work / "src"
    subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={a.mib}"],
                   check=True, capture_output=True)
    mounts = {(side, role): Mount(work / f"{side}{role}",
                                  ["--store", str(work / f"store-{side}" / "dnpfs.sqlite")],
                                  work / f"{side}{role}.log",
                                  wrap=lambda argv, side=side: in_tree(argv, trees[side]))
              for side in "AB" for role in ("w", "r")}
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        for m in mounts.values():
            m.start()
        fifo = work / "fifo"
        os.mkfifo(fifo)
        for i in range(a.pairs):
            seconds = _through(str(fifo), (src, fifo), size)
            results.setdefault("FIFO", []).append((a.mib / seconds, 0.0))
            for side in ("AB" if i % 2 == 0 else "BA"):
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
    finally:
        for m in mounts.values():
            m.stop()
        if not a.keep:
            subprocess.run(["rm", "-rf", str(work)])
        else:
            print(f"kept {work}")
    fifo = [x for x, _ in results.get("FIFO", [])]
    for side in "AB":
        xs = results.get(side, [])
        if not xs:
            continue
        print(f"{side} median {statistics.median(x for x, _ in xs):6.0f} MiB/s"
              f"  {statistics.median(c for _, c in xs) * 1024 / a.mib:5.2f} daemon CPU s/GiB"
              f"  /FIFO median {statistics.median(x / f for (x, _), f in zip(xs, fifo)):.2f}"
              f"  per pair {[round(x / f, 2) for (x, _), f in zip(xs, fifo)]}")
    if results.get("A") and results.get("B") and len(results["A"]) == len(results["B"]):
        ratios = [b[0] / x[0] for x, b in zip(results["A"], results["B"])]
        print(f"B/A median {statistics.median(ratios):.2f}"
              f"  per pair {[round(r, 2) for r in ratios]}")
    print(f"FIFO median {statistics.median(fifo):.0f} MiB/s, all {[round(f) for f in fifo]}")


if __name__ == "__main__":
    sys.exit(main())

"""Two pyfuse3 builds side by side: bulk read and through over Kafka, interleaved.

    python -m benchmarks.pyfuse3_ab --b-python /tmp/venv-gil/bin/python [--mib 256] [--pairs 8]

Runs a writing and a reading daemon under each interpreter at once (A: this
one, B: --b-python, e.g. a venv with a patched pyfuse3 and this one's
packages through a .pth file), all on the Kafka dev broker.  Each pair of
measurements is taken back to back, in alternating order (AB, BA, ...), so
that the machine's load, which moves by more than a change of a few tens of
percent between runs of `make bench` on a shared machine, falls on both
alike.  *read*: `cat` of a backlog of MIB MiB written once (each read by a
reader group of its own); *through*: `cat` waiting on a new pipe while `dd`
writes MIB MiB into it.  Prints MiB/s, the daemons' CPU s/GiB and B/A per
pair with its median.  Run it once with the same interpreter on both sides
first: that A/A ratio is the tool's own error on the day (on 2026-12-07,
1.00× read and 1.21× through).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time

from . import ab
from .rig import ROOT, Admin, MiB, kafka_bootstrap, proc_cpu_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--b-python", required=True, help="the interpreter of side B")
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--pairs", type=int, default=8)
    a = ap.parse_args()
    pythons = {"A": sys.executable, "B": a.b_python}
    size = a.mib * MiB
    work = ab.work_folder("ab")
    bootstrap = kafka_bootstrap()
    prefix = f"ab-{secrets.token_hex(4)}."
    src = work / "src"
    subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={a.mib}"],
                   check=True, capture_output=True)
    # The reader's default group as a consumer group, as when this was
    # measured (docs/decisions.md): the share group's read path is another.
    mounts = ab.side_mounts(work, ("w", "r"),
                            lambda side: ["--kafka", bootstrap, "--topic-prefix", prefix,
                                          "--share-groups", "never"],
                            lambda side, argv: [pythons[side], *argv[1:]])
    results: dict[tuple[str, str], list[ab.Sample]] = {}
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)  # both sides' daemons run this tree's dnpfs
    try:
        with ab.running(mounts.values(), work):
            backlog = mounts["A", "w"].path / "backlog"
            os.mkfifo(backlog)
            subprocess.run(["dd", f"if={src}", f"of={backlog}", "bs=128k"], check=True,
                           capture_output=True)
            for i in range(a.pairs):
                for side in ab.in_turn("AB", i):
                    reader = mounts[side, "r"]
                    cpu0, t0 = proc_cpu_seconds(reader.pid), time.perf_counter()
                    _count(f"cat {reader.path}/backlog@ab{i}{side}", size)
                    results.setdefault((side, "read"), []).append(
                        (a.mib / (time.perf_counter() - t0), proc_cpu_seconds(reader.pid) - cpu0))
                for side in ab.in_turn("AB", i):
                    writer, reader = mounts[side, "w"], mounts[side, "r"]
                    pipe = f"through{i}{side}"
                    os.mkfifo(writer.path / pipe)
                    cpu0 = proc_cpu_seconds(writer.pid) + proc_cpu_seconds(reader.pid)
                    cat = subprocess.Popen(f"cat {reader.path}/{pipe} | wc -c", shell=True,
                                           stdout=subprocess.PIPE, text=True)
                    time.sleep(0.3)  # the reader waits first
                    t0 = time.perf_counter()
                    subprocess.run(["dd", f"if={src}", f"of={writer.path / pipe}", "bs=128k"],
                                   check=True, capture_output=True)
                    got = int(cat.communicate()[0])
                    seconds = time.perf_counter() - t0
                    if got != size:
                        raise SystemExit(f"through {side}: read {got} bytes of {size}")
                    cpu = proc_cpu_seconds(writer.pid) + proc_cpu_seconds(reader.pid) - cpu0
                    results.setdefault((side, "through"), []).append((a.mib / seconds, cpu))
                    os.unlink(writer.path / pipe)
                print(f"pair {i + 1}/{a.pairs}: " + ", ".join(
                    f"{side} {kind} {xs[-1][0]:.0f}"
                    for (side, kind), xs in sorted(results.items())), flush=True)
    finally:
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path
        Admin(bootstrap).delete_prefix(prefix)
    for (side, kind), xs in sorted(results.items()):
        print(ab.median_text(f"{side} {kind:8s}", xs, "{:7.0f} MiB/s",
                             "{:5.2f} daemon CPU s/GiB", 1024 / a.mib)
              + f"  all {[round(x) for x, _ in xs]}")
    for kind in ("read", "through"):
        print(ab.ratio_text(f"B/A {kind:8s}", ab.b_over_a(results["A", kind], results["B", kind]),
                            "pair"))


def _count(command: str, want: int) -> None:
    got = int(subprocess.run(f"{command} | wc -c", shell=True, check=True, capture_output=True,
                             text=True).stdout)
    if got != want:
        raise SystemExit(f"{command}: read {got} bytes of {want}")


if __name__ == "__main__":
    main()

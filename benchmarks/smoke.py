"""The smoke ratios: small transfers that tell, in ~30 s, whether throughput
fell far behind its references.  tests/bench/test_smoke.py measures them and
compares with benchmarks/baseline.json, which `make bench` re-measures.

Only ratios are kept, never times: dnpfs and its reference run back to back,
so a slower or busier machine moves both.  Each side is the best of a few
runs, which is steadier than one run on a shared machine.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import time
from pathlib import Path

from . import steps
from .rig import ROOT, MiB
from .scenarios import kafka_mounts, store_mounts
from .steps import Bench

BASELINE = ROOT / "benchmarks" / "baseline.json"
SIZE = 64 * MiB
RECORD = 128 << 10
TRIES = 3
BASELINE_RUNS = 3  # make bench records the median of this many measurements

# name -> what it compares (for the baseline file and failure messages)
RATIOS = {
    "embedded_through_vs_fifo": "embedded store, dd A | cat B at once, vs a local FIFO",
    "kafka_write_vs_kcat": "Kafka, dd into mount A (close waits for acks) vs kcat -P",
    "kafka_through_vs_kcat": "Kafka, dd A | cat B at once vs kcat -P | kcat -C",
}


def _best(results: list[dict]) -> float:
    return max(r["mib_s"] for r in results)


def measure(bench: Bench) -> dict:
    """The smoke ratios, measured with *bench* (whose broker and prefix it uses)."""
    src = bench.source(SIZE)
    folder, files = bench.parts(SIZE, RECORD)
    records = SIZE // RECORD
    got: dict[str, list[dict]] = {k: [] for k in ("fifo", "store", "dw", "kw", "dt", "kt")}
    with store_mounts(bench, "smoke-store") as (A, B):
        for i in range(TRIES):
            got["fifo"].append(bench.run("smoke: local FIFO", steps.fifo_through, bench, src,
                                         SIZE, RECORD))
            pipe = f"smoke{i}"
            os.mkfifo(A / pipe)
            got["store"].append(bench.run("smoke: embedded dd A | cat B", steps.dnpfs_through,
                                          bench, src, A / pipe, B / pipe, SIZE, RECORD,
                                          [A.pid, B.pid], None))
            os.unlink(A / pipe)
    with kafka_mounts(bench, "smoke-kafka") as (A, B):
        for i in range(TRIES):
            sub = f"smoke{i}."
            w, t = sub + "w", sub + "t"
            os.mkfifo(A / w)
            os.mkfifo(A / t)
            kw, kt = bench.topic(sub + "kcat-w"), bench.topic(sub + "kcat-t")
            bench.admin.create([kw, kt])
            got["dw"].append(bench.run("smoke: dnpfs dd -> A", steps.dd_write, bench, src, A / w,
                                       SIZE, RECORD, [A.pid, B.pid]))
            got["kw"].append(bench.run("smoke: kcat -P", steps.kcat_write, bench, kw, folder,
                                       files, SIZE, RECORD))
            got["dt"].append(bench.run("smoke: dnpfs dd A | cat B", steps.dnpfs_through, bench,
                                       src, A / t, B / t, SIZE, RECORD, [A.pid, B.pid], t))
            got["kt"].append(bench.run("smoke: kcat -P | kcat -C", steps.kcat_through, bench, kt,
                                       folder, files, SIZE, records, RECORD))
            bench.admin.delete_prefix(bench.topic(sub))
    ratios = {
        "embedded_through_vs_fifo": _best(got["store"]) / _best(got["fifo"]),
        "kafka_write_vs_kcat": _best(got["dw"]) / _best(got["kw"]),
        "kafka_through_vs_kcat": _best(got["dt"]) / _best(got["kt"]),
    }
    return {
        "ratios": {k: round(v, 4) for k, v in ratios.items()},
        "best_mib_s": {k: round(_best(v), 1) for k, v in got.items()},
        "params": {"bytes": SIZE, "record": RECORD, "tries": TRIES},
    }


def measure_baseline(bench: Bench) -> dict:
    """The ratios to record: the median of BASELINE_RUNS measurements.  One
    measurement's FIFO reference once came out at half its usual speed, and
    the baseline it recorded failed the next CI run."""
    runs = [measure(bench) for _ in range(BASELINE_RUNS)]
    return {
        "ratios": {k: statistics.median(r["ratios"][k] for r in runs) for k in RATIOS},
        "runs": {k: [r["ratios"][k] for r in runs] for k in RATIOS},
        "best_mib_s": [r["best_mib_s"] for r in runs],
        "params": {**runs[0]["params"], "runs": BASELINE_RUNS},
    }


def run(bootstrap: str, work: Path) -> dict:
    """Measure the smoke ratios in *work* on the broker at *bootstrap* (for tests)."""
    prefix = f"bench-smoke-{time.strftime('%H%M%S')}-{secrets.token_hex(2)}."
    bench = Bench(None, work, bootstrap, prefix)
    try:
        return measure(bench)
    finally:
        bench.admin.delete_prefix(prefix)


def save_baseline(smoke: dict, meta: dict) -> None:
    m = meta["machine"]
    BASELINE.write_text(json.dumps({
        "about": "Throughput ratios of the smoke benchmark (benchmarks/smoke.py), written by"
                 " `make bench`; tests/bench/test_smoke.py fails when a ratio falls below"
                 " half of the one here.",
        "measured": meta["started"],
        "git": meta["git"],
        "machine": f"{m['cores']} cores, {m['memory_gib']} GiB, kernel {m['kernel']},"
                   f" Python {m['python']}, Kafka {m['kafka']}",
        "compares": RATIOS,
        **smoke,
    }, indent=1) + "\n")


def load_baseline() -> dict:
    return json.loads(BASELINE.read_text())

"""PNG plots of results.json (matplotlib, a benchmark-only dependency).

    python -m benchmarks.plots bench-results/results.json   # redraw into that folder
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from .rig import GiB, size_text  # noqa: E402

COLORS = {"dnpfs": "#1f77b4", "kcat": "#ff7f0e", "aiokafka": "#2ca02c", "fifo": "#7f7f7f",
          "embedded": "#9467bd", "fuse": "#bcbd22", "sqlite": "#17becf"}
LABELS = {"dnpfs": "dnpfs (Kafka)", "kcat": "kcat", "aiokafka": "aiokafka script",
          "fifo": "local FIFO", "embedded": "dnpfs (embedded store)",
          "fuse": "FUSE ceiling (pyfuse3, stores nothing)", "sqlite": "SQLite alone"}


def _ok(results: dict, name: str) -> dict | None:
    s = results.get("scenarios", {}).get(name)
    return s if s and "error" not in s else None


def _spread(reps: list[dict], key: str, field: str) -> tuple[float, float, float] | None:
    values = [r[key][field] for r in reps if key in r]
    if not values:
        return None
    values.sort()
    return values[len(values) // 2] if len(values) % 2 else \
        (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2, values[0], values[-1]


def _bars(ax, groups: list[str], series: list[tuple[str, list]], fmt: str = "{:,.0f}") -> None:
    """Grouped bars with min–max whiskers; series: (tool, [(median, lo, hi) | None per group])."""
    width = 0.8 / len(series)
    for i, (tool, values) in enumerate(series):
        xs, hs, lo, hi = [], [], [], []
        for g, v in enumerate(values):
            if v is None:
                continue
            xs.append(g + (i - (len(series) - 1) / 2) * width)
            hs.append(v[0])
            lo.append(v[0] - v[1])
            hi.append(v[2] - v[0])
        bars = ax.bar(xs, hs, width * 0.95, color=COLORS[tool], label=LABELS[tool],
                      yerr=[lo, hi] if any(lo) or any(hi) else None, capsize=3)
        for bar, h in zip(bars, hs):
            ax.annotate(fmt.format(h), (bar.get_x() + bar.get_width() / 2, h),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(range(len(groups)), groups)
    ax.grid(axis="y", alpha=0.3)


def bulk(results: dict, out: Path) -> str | None:
    b = _ok(results, "bulk")
    if not b:
        return None
    e = _ok(results, "embedded")
    phases = ["write", "read", "through"]
    series = [(t, [_spread(b["reps"], f"{t}.{ph}", "mib_s") for ph in phases])
              for t in ("dnpfs", "kcat", "aiokafka", "fifo", "fuse")]
    if e:
        series.append(("embedded", [_spread(e["reps"], f"dnpfs.{ph}", "mib_s") for ph in phases]))
        series.append(("sqlite", [_spread(e["reps"], f"sqlite.{ph}", "mib_s") for ph in phases]))
    series = [(t, v) for t, v in series if any(v)]
    fig, ax = plt.subplots(figsize=(10, 5))
    _bars(ax, phases, series)
    ax.set_yscale("log")
    ax.set_ylabel("MiB/s (log scale; whiskers: min–max over repetitions)")
    p = b["params"]
    ax.set_title(f"Bulk: {size_text(p['bytes'])} in {p['record'] >> 10} KiB records")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out, "bulk")


def small(results: dict, out: Path) -> str | None:
    s = _ok(results, "small")
    if not s:
        return None
    phases = ["write", "through"]
    series = [(t, [_spread(s["reps"], f"{t}.{ph}", "records_s") for ph in phases])
              for t in ("dnpfs", "kcat", "aiokafka", "fuse")]
    series = [(t, v) for t, v in series if any(v)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _bars(ax, phases, series)
    ax.set_yscale("log")
    ax.axhline(20_000, color="red", linestyle="--", linewidth=1, label="target 20,000/s")
    ax.set_ylabel("records/s (log scale)")
    ax.set_title(f"Small writes: {s['params']['lines']:,} lines of {s['params']['size']} bytes")
    ax.legend(fontsize=8)
    return _save(fig, out, "small")


def latency(results: dict, out: Path) -> str | None:
    lat, emb = _ok(results, "latency"), _ok(results, "embedded")
    curves = []
    if lat:
        rep = lat["reps"][0]
        curves += [(k, rep[k]) for k in ("dnpfs", "aiokafka", "fifo") if k in rep]
    if emb:
        curves.append(("embedded", emb["latency"]["dnpfs"]))
        if not lat:
            curves.append(("fifo", emb["latency"]["fifo"]))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for tool, data in curves:
        xs = [x / 1000 for x in data["samples_us"]]
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.plot(xs, ys, color=COLORS[tool],
                label=f"{LABELS[tool]}: p50 {data['p50_us'] / 1000:.2f} ms,"
                      f" p99 {data['p99_us'] / 1000:.2f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("write → read latency, ms (log scale)")
    ax.set_ylabel("share of messages")
    for q in (0.5, 0.99):
        ax.axhline(q, color="black", linewidth=0.5, alpha=0.4)
    ax.grid(alpha=0.3, which="both")
    ax.set_title("Latency of a 100-byte message, reader already waiting")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, out, "latency")


def scaling(results: dict, out: Path) -> str | None:
    sc = _ok(results, "scaling")
    if not sc:
        return None
    counts = [n for n in sc["params"]["pipes"] if f"pipes.{n}" in sc["reps"][0]]
    steps = [sc["reps"][0][f"pipes.{n}"] for n in counts]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(counts, [s["mib_s"] for s in steps], "o-", color=COLORS["dnpfs"],
            label="aggregate MiB/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_xlabel("pipes at once (one writer + one reader each)")
    ax.set_ylabel("aggregate MiB/s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    a = [s["per_daemon_cpu_s"][0] / s["seconds"] for s in steps]
    b = [s["per_daemon_cpu_s"][1] / s["seconds"] for s in steps]
    ax2.plot(counts, a, "s--", color="#d62728", label="daemon A cores")
    ax2.plot(counts, b, "^--", color="#e377c2", label="daemon B cores")
    ax2.plot(counts, [s["cores_busy_broker"] for s in steps], "d--", color="#8c564b",
             label="broker cores")
    ax2.plot(counts, [s["cores_busy_machine"] for s in steps], ":", color="black",
             label="machine cores busy")
    ax2.set_ylabel("cores busy")
    ax2.set_ylim(0, max(2.1, results["meta"]["machine"]["cores"] + 0.1))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
    ax.set_title(f"Scaling: {size_text(sc['params']['total_bytes'])} over N pipes")
    return _save(fig, out, "scaling")


def cost(results: dict, out: Path) -> str | None:
    b = _ok(results, "bulk")
    if not b:
        return None
    s = b["summary"]
    keys = [(f"{t}.{ph}", f"{t}\n{ph}") for ph in ("write", "read", "through")
            for t in ("dnpfs", "kcat", "aiokafka")]
    e = _ok(results, "embedded")
    if e:
        keys += [(("embedded", f"dnpfs.{ph}"), f"embedded\n{ph}")
                 for ph in ("write", "read", "through")]
    labels, parts = [], {"daemon A": [], "daemon B": [], "broker": [], "client": []}
    for key, label in keys:
        step = e["summary"].get(key[1]) if isinstance(key, tuple) else s.get(key)
        if not step:
            continue
        gib = step["bytes"] / GiB
        per = (list(step.get("per_daemon_cpu_s") or []) + [0, 0])[:2] \
            if "per_daemon_cpu_s" in step else [0, 0]
        labels.append(label)
        parts["daemon A"].append(per[0] / gib)
        parts["daemon B"].append(per[1] / gib)
        parts["broker"].append(step.get("broker_cpu_s", 0) / gib)
        parts["client"].append(step.get("client_cpu_s", 0) / gib)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    bottom = [0.0] * len(labels)
    colors = {"daemon A": "#1f77b4", "daemon B": "#aec7e8", "broker": "#8c564b",
              "client": "#ff7f0e"}
    for name, values in parts.items():
        ax.bar(range(len(labels)), values, bottom=bottom, color=colors[name], label=name)
        bottom = [x + y for x, y in zip(bottom, values)]
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("CPU seconds per GiB")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("CPU per GiB moved, by process (medians)")
    return _save(fig, out, "cost")


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def draw(results: dict, out: Path) -> dict[str, str]:
    """Every plot the results allow; {name: file name in *out*}."""
    pictures = {}
    for name, fn in (("bulk", bulk), ("small", small), ("latency", latency),
                     ("scaling", scaling), ("cost", cost)):
        made = fn(results, out)
        if made:
            pictures[name] = made
    return pictures


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("bench-results/results.json")
    print(draw(json.loads(path.read_text()), path.parent))


if __name__ == "__main__":
    main()

"""`python -m benchmarks`: run the scenarios, write results, plots and docs.

    python -m benchmarks                  # everything, ~9 minutes on 2 cores (+~5: readers)
    python -m benchmarks --quick          # a smoke run: small sizes, ~1 minute
    python -m benchmarks --only bulk,latency --bulk-mib 256

Writes OUT/results.json (every repetition of every step), OUT/*.png, and,
for a full run, docs/benchmarks.md with its pictures in docs/benchmarks/
and benchmarks/baseline.json (the ratios tests/bench checks).  Kafka
scenarios run on the dev broker (scripts/kafka-dev, started if needed) or
DNPFS_KAFKA_BOOTSTRAP, which must be a loopback address, under a topic prefix
of their own that is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import report, smoke
from .rig import ROOT, RigError, kafka_bootstrap, machine
from .scenarios import KAFKA_SCENARIOS, SCENARIOS, share_groups_of
from .steps import Bench

FULL = dict(bulk_mib=1024, record_kib=128, reps=5, reps_small=3, lines=200_000,
            latency_count=2000, scale_pipes="1,4,16,64", scale_mib=1024, embedded_mib=1024,
            embedded_record_kib=1024, readers="100,1000")
QUICK = dict(bulk_mib=128, record_kib=128, reps=1, reps_small=1, lines=20_000,
             latency_count=300, scale_pipes="1,4,16,64", scale_mib=128, embedded_mib=128,
             embedded_record_kib=1024, readers="20,200")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition (~1 min)")
    p.add_argument("--share-groups", action="store_true",
                   help="Kafka mounts with --share-groups auto (the mounts' own default): the"
                        " default group read as a share group where the broker has them"
                        " (default here: --share-groups never, a consumer group, the job"
                        " kcat -C does)")
    p.add_argument("--only", default=",".join(SCENARIOS),
                   help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})")
    p.add_argument("--out", type=Path, default=ROOT / "bench-results",
                   help="results folder (default bench-results/)")
    p.add_argument("--work", type=Path, default=None,
                   help="where test data, stores and mounts go (default: a new folder in /tmp)")
    p.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                   help="write docs/benchmarks.md and its pictures (default: full runs of"
                        " every scenario)")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None,
                   help="re-measure the smoke ratios into benchmarks/baseline.json (default:"
                        " as --docs)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                   help="PNG plots (needs matplotlib: pip install -e '.[bench]')")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    sizes = p.add_argument_group("sizes (defaults: full run / --quick)")
    for name, default in FULL.items():
        sizes.add_argument("--" + name.replace("_", "-"), type=type(default), default=None,
                           help=f"default {default} / {QUICK[name]}")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    for name, default in base.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.selected = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.selected if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    everything = set(args.selected) == set(SCENARIOS)
    if args.docs is None:
        args.docs = everything and not args.quick
    if args.baseline is None:
        args.baseline = args.docs
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dnpfs-bench-", dir=args.work))
    prefix = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}."
    needs_kafka = bool(KAFKA_SCENARIOS & set(args.selected)) or args.baseline
    bench = Bench(args, work, kafka_bootstrap() if needs_kafka else None, prefix)
    started = time.time()
    results: dict = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "quick": args.quick,
            "sizes": {k: getattr(args, k) for k in FULL},
            "selected": args.selected,
            "topic_prefix": prefix,
            "share_groups": share_groups_of(args),
            "bootstrap": bench.bootstrap,
            "git": report.git_describe(),
            "machine": machine(work, bench.broker),
        },
        "scenarios": {},
    }
    out_json = args.out / "results.json"
    bench.say(f"dnpfs benchmarks -> {args.out}  (work {work}, topic prefix {prefix})")
    code = 0
    try:
        for name in args.selected:
            try:
                results["scenarios"][name] = SCENARIOS[name](bench)
            except (RigError, OSError) as e:
                bench.say(f"scenario {name} FAILED: {e}")
                traceback.print_exc()
                results["scenarios"][name] = {"error": str(e)}
                code = 1
            _write(out_json, results)
        if args.baseline:
            bench.say("smoke ratios for benchmarks/baseline.json (what tests/bench checks)")
            results["smoke"] = smoke.measure_baseline(bench)
            smoke.save_baseline(results["smoke"], results["meta"])
    except KeyboardInterrupt:
        bench.say("interrupted: cleaning up")
        code = 130
    finally:
        results["meta"]["duration_s"] = round(time.time() - started, 1)
        results["targets"] = report.targets(results)
        _write(out_json, results)
        if bench.admin is not None:
            try:
                bench.admin.delete_prefix(prefix)
            except Exception as e:  # noqa: BLE001 - cleaning up is best effort
                print(f"could not delete topics {prefix}*: {e}", file=sys.stderr)
        if args.keep:
            bench.say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if code == 130:
        return code
    pictures = _plots(results, args.out) if args.plots else {}
    (args.out / "benchmarks.md").write_text(report.markdown(results, pictures, image_dir="."))
    if args.docs:
        docs = ROOT / "docs"
        (docs / "benchmarks").mkdir(exist_ok=True)
        for name in [*pictures.values(), "results.json"]:
            shutil.copy2(args.out / name, docs / "benchmarks" / name)
        (docs / "benchmarks.md").write_text(report.markdown(results, pictures,
                                                            image_dir="benchmarks"))
        bench.say("wrote docs/benchmarks.md, docs/benchmarks/*.png and results.json")
    bench.say(f"results: {out_json}")
    print(report.console_summary(results), flush=True)
    return code


def _plots(results: dict, out: Path) -> dict[str, str]:
    try:
        from . import plots
    except ImportError as e:
        print(f"no plots: {e} (pip install -e '.[bench]')", file=sys.stderr)
        return {}
    return plots.draw(results, out)


def _write(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())

"""Where the dnpfs daemons spend their time: py-spy during the hot scenarios.

    python -m benchmarks.profile [--mib 512] [--lines 100000] [--out bench-results/profiles]
    python -m benchmarks.profile --pipes 4,16 --mib 1024 # the scaling scenario's writing daemon
    python -m benchmarks.profile --analyze FILE.txt      # a raw py-spy profile

Mounts two daemons on the Kafka dev broker (--store: on one SQLite store) and records, with ``py-spy record
--format raw --threads``, the writing daemon during a bulk write (dd bs=128k)
and a small-write run (dd bs=100), and the reading daemon during a bulk read
(cat).  Prints, per profile, the share of samples per thread, the functions
with the most self time (file:line) and the most inclusive time.  py-spy
slows the daemon it samples: profile runs are for hot spots, not for numbers.
Needs py-spy (pip install py-spy) and root.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import steps
from .rig import MiB, ROOT, kafka_bootstrap
from .scenarios import kafka_mounts, store_mounts
from .steps import Bench

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


class Spy:
    """py-spy record on one process until stopped."""

    def __init__(self, pid: int, out: Path, rate: int, gil: bool = False) -> None:
        self.out = out
        argv = [_py_spy(), "record", "-p", str(pid), "-o", str(out), "--format", "raw",
                "--threads", "-r", str(rate)]
        if gil:
            argv.append("--gil")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # attached

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if not self.out.exists():
            raise SystemExit(f"py-spy wrote nothing: {self.proc.stderr.read().decode()[-500:]}")


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


def _short(path: str) -> str:
    """dnpfs/fs.py, trio/_core/_run.py, aiokafka/producer/sender.py, <stdlib>/..."""
    for marker in ("/site-packages/", "/work/main/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    m = re.search(r"/lib/python3\.\d+/(.*)", path)
    return f"<stdlib>/{m.group(1)}" if m else path


def _package(file: str, func: str) -> str:
    """dnpfs, trio, aiokafka, pyfuse3, asyncio, or 'waiting in epoll/select'."""
    if file in ("selectors.py", "<stdlib>/selectors.py") or file.endswith("_io_epoll.py") and \
            func.endswith("get_events"):
        return "waiting in epoll (selectors, trio get_events)"
    top = file.split("/", 1)[0]
    if top == "<stdlib>":
        top = file.split("/")[1].removesuffix(".py")
    return {"_pyfuse3.py": "pyfuse3"}.get(top, top.removesuffix(".py"))


def analyze(path: Path, top: int = 15) -> str:
    """A text summary of one raw (collapsed stacks) py-spy profile."""
    total = 0
    threads: collections.Counter[str] = collections.Counter()
    self_line: collections.Counter[str] = collections.Counter()
    self_func: collections.Counter[str] = collections.Counter()
    self_pkg: collections.Counter[str] = collections.Counter()
    incl_func: collections.Counter[str] = collections.Counter()
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "?")
        threads[re.sub(r"\s*\(0x[0-9a-f]+\)", "", thread)] += n
        py = []
        for f in frames:
            m = _FRAME.match(f)
            if m and m.group("file"):
                py.append((m.group("func"), _short(m.group("file")), m.group("line")))
        total += n
        if not py:
            continue
        func, file, line = py[-1]
        self_line[f"{file}:{line} {func}"] += n
        self_func[f"{file} {func}"] += n
        self_pkg[_package(file, func)] += n
        for key in {f"{file} {func}" for func, file, _ in py}:
            incl_func[key] += n
    if not total:
        return f"{path.name}: no samples\n"

    def block(title: str, counter: collections.Counter) -> list[str]:
        rows = [f"  {title}"]
        rows += [f"    {100 * n / total:5.1f}%  {k}" for k, n in counter.most_common(top)]
        return rows

    lines = [f"{path.name}: {total} samples"]
    lines += block("threads", threads)
    lines += block("self time by package", self_pkg)
    lines += block("self time by line", self_line)
    lines += block("self time by function", self_func)
    lines += block("inclusive time by function", incl_func)
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=512, help="bulk size (default 512)")
    p.add_argument("--lines", type=int, default=100_000, help="small writes (default 100000)")
    p.add_argument("--rate", type=int, default=200, help="samples per second (default 200)")
    p.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    p.add_argument("--store", action="store_true",
                   help="profile two mounts of an embedded SQLite store instead of Kafka")
    p.add_argument("--pipes", default="",
                   help="instead: the scaling scenario at these pipe counts (e.g. 4,16), "
                        "--mib in total, profiling the writing daemon")
    p.add_argument("--out", type=Path, default=ROOT / "bench-results" / "profiles")
    p.add_argument("--analyze", type=Path, nargs="*", help="only summarize these raw profiles")
    args = p.parse_args()
    if args.analyze:
        for path in args.analyze:
            print(analyze(path))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dnpfs-profile-"))
    prefix = f"bench-profile-{time.strftime('%H%M%S')}-{secrets.token_hex(2)}."
    bench = Bench(args, work, None if args.store else kafka_bootstrap(), prefix)
    mounts = store_mounts if args.store else kafka_mounts
    tag = ("store-" if args.store else "") + ("gil-" if args.gil else "")
    size, record = args.mib * MiB, 128 << 10
    summaries = []
    try:
        src = bench.source(size)
        lines = bench.lines(args.lines)
        with mounts(bench, "profile") as (A, B):
            daemons = [A.pid, B.pid]
            jobs = [
                ("bulk-write", A.pid, lambda: steps.dd_write(bench, src, A / "bulk", size,
                                                             record, daemons)),
                ("bulk-read", B.pid, lambda: steps.cat_read(bench, B / "bulk", size,
                                                            size // record, record, daemons)),
                ("small-write", A.pid, lambda: steps.dd_write(bench, lines, A / "small",
                                                              args.lines * 100, 100, daemons)),
            ]
            if args.pipes:
                jobs = [_fanout_job(bench, A, B, int(n), size, record, daemons)
                        for n in args.pipes.split(",")]
            else:
                os.mkfifo(A / "bulk")
                os.mkfifo(A / "small")
            for name, pid, job in jobs:
                out = args.out / f"{tag}{name}.txt"
                spy = Spy(pid, out, args.rate, args.gil)
                try:
                    result = bench.run(f"{name} under py-spy", job)
                finally:
                    spy.stop()
                summaries.append(f"## {name}: {steps.describe(result)}\n{analyze(out)}")
    finally:
        if bench.admin is not None:
            bench.admin.delete_prefix(prefix)
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(summaries)
    (args.out / f"{tag}summary.txt").write_text(text)
    print(text)


def _fanout_job(bench: Bench, A, B, n: int, size: int, record: int, daemons: list[int]):
    """The scaling scenario's step at n pipes, profiled on the writing daemon."""
    pipes = [f"scale{n}.{i:02d}" for i in range(n)]

    def job() -> dict:
        bench.admin.create([bench.topic(p) for p in pipes])
        for p in pipes:  # both mounts see them (a lookup asks the broker)
            os.stat(A / p), os.stat(B / p)
        return steps.fanout(bench, [(A / p, B / p) for p in pipes], pipes, size // n, record,
                            daemons)

    return f"fanout-{n}-write", A.pid, job


if __name__ == "__main__":
    main()

"""Work queues (issue #28): bash `while read` workers on three mounts of one
embedded store, and of one Kafka cluster, next to a local FIFO and a plain
Kafka share consumer in the same run.

    python -m benchmarks.queue [--jobs 1000] [--workers 1,3,9] [--kafka HOST:PORT] [--save]

Prints one JSON object: jobs/s for --jobs short jobs (a job: one line of 11
bytes, one write(), that a bash `while read` worker appends to its file)
with each worker count, the workers spread round-robin over the mounts, and
one worker on a local FIFO.  With --kafka (default: the dev broker if it
runs), the same over three Kafka mounts (the default group is a share group
on Kafka 4.2 and later), and a plain share consumer (dnpfs's own requests,
no FUSE, no bash) taking the same number of records of the topic one
ShareFetch each, as a mount does, and 500 a ShareFetch, as a consumer
fetching ahead would.  bash reads a byte per read(), so one worker's
jobs/s times 11 is its 1-byte read pace.  --save writes it to
docs/benchmarks/queue.json, which benchmarks/report.py puts in
docs/benchmarks.md ("Work queues").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.mount import Mount

from .share_client import share_consume

SAVED = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "queue.json"

WORKER = 'while IFS= read -r line; do printf "%s\\n" "$line" >> "$1"; done < "$2"'
WRITER = 'for i in $(seq -f %06g 1 "$2"); do echo "job $i"; done > "$1"'


def _count(outs) -> int:
    total = 0
    for out in outs:
        try:
            total += out.read_bytes().count(b"\n")
        except FileNotFoundError:
            pass
    return total


def run_workers(folder: Path, pipes: list[Path], jobs: int, label: str) -> float:
    """Seconds from the writer's start until *jobs* lines reached the workers."""
    outs = [folder / f"{label}.{i}.out" for i in range(len(pipes))]
    workers = [subprocess.Popen(["bash", "-c", WORKER, "w", str(o), str(p)],
                                start_new_session=True) for o, p in zip(outs, pipes)]
    try:
        time.sleep(0.5)  # the workers open and block
        start = time.monotonic()
        writer = subprocess.Popen(["bash", "-c", WRITER, "w", str(pipes[0]), str(jobs)])
        while _count(outs) < jobs:
            if time.monotonic() - start > 600:
                raise RuntimeError(f"{label}: {_count(outs)} of {jobs} jobs after 600 s")
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        writer.wait(60)
        return elapsed
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
            w.wait()


def _dev_broker() -> str | None:
    tool = Path(__file__).resolve().parent.parent / "scripts" / "kafka-dev"
    done = subprocess.run([str(tool), "bootstrap"], capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout else None


def _rows(folder: Path, mounts, args, line: int, prefix: str) -> dict:
    result = {}
    for n in map(int, args.workers.split(",")):
        name = f"q{n}"
        os.mkfifo(mounts[0] / name)
        pipes = [mounts[i % 3] / name for i in range(n)]
        secs = run_workers(folder, pipes, args.jobs, f"{prefix}{name}")
        result[f"{prefix}_{n}_workers"] = {"seconds": round(secs, 2),
                                           "jobs_per_s": round(args.jobs / secs),
                                           "read_bytes_per_s": round(args.jobs * line / secs)}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--workers", default="1,3,9")
    ap.add_argument("--kafka", default=None, help="bootstrap (default: the dev broker's)")
    ap.add_argument("--no-kafka", action="store_true")
    ap.add_argument("--save", action="store_true", help="write docs/benchmarks/queue.json")
    args = ap.parse_args()
    line = len("job 000001\n")
    with tempfile.TemporaryDirectory(prefix="dnpfs-queue-") as tmp:
        folder = Path(tmp)
        store = ["--store", str(folder / "store" / "dnpfs.sqlite")]
        mounts = [Mount.under(folder, f"m{i}", store).start() for i in range(3)]
        try:
            result = {"jobs": args.jobs, "line_bytes": line}
            fifo = folder / "fifo"
            os.mkfifo(fifo)
            secs = run_workers(folder, [fifo], args.jobs, "fifo")
            result["fifo_1_worker"] = {"seconds": round(secs, 2),
                                       "jobs_per_s": round(args.jobs / secs)}
            result.update(_rows(folder, mounts, args, line, "dnpfs"))
            bootstrap = None if args.no_kafka else (args.kafka or _dev_broker())
            if bootstrap:
                prefix = f"bq{os.getpid()}."
                # Work queues on Kafka are share groups (docs/kafka.md).
                kafka = ["--kafka", bootstrap, "--topic-prefix", prefix, "--share-groups", "auto"]
                kmounts = [Mount.under(folder, f"k{i}", kafka).start() for i in range(3)]
                try:
                    result.update(_rows(folder, kmounts, args, line, "kafka"))
                    for batch in (1, 500):
                        secs = share_consume(bootstrap, f"{prefix}q1", args.jobs, batch)
                        result[f"share_consumer_{batch}_per_fetch"] = {
                            "seconds": round(secs, 2), "jobs_per_s": round(args.jobs / secs)}
                    for n in map(int, args.workers.split(",")):
                        os.unlink(kmounts[0] / f"q{n}")
                finally:
                    for m in kmounts:
                        m.stop()
            result["loadavg"] = os.getloadavg()[0]
            result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            text = json.dumps(result, indent=1)
            print(text)
            if args.save:
                SAVED.write_text(text + "\n")
        finally:
            for m in mounts:
                m.stop()


if __name__ == "__main__":
    main()

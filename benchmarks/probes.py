"""Small programs the scenarios run as child processes, each printing one JSON line.

    python -m benchmarks.probes count [--ready-file F]      # stdin to EOF
    python -m benchmarks.probes latency WRITE_PATH READ_PATH --count N --size B
    python -m benchmarks.probes fanout --pairs W1:R1 W2:R2 ... --bytes N --record B
    python -m benchmarks.probes sqlite --dir D --bytes N     # the embedded store's ceiling

They only make syscalls on files (a local FIFO or dnpfs pipes): every figure
they report is what a program sees through the file API.  Times are
CLOCK_MONOTONIC, comparable with the harness's time.monotonic().
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import threading
import time

READ_SIZE = 1 << 20


def count(args) -> dict:
    """Bytes on stdin until EOF, and when the first and last arrived.  With
    --ready-file, creates that file once it is about to read."""
    fd = sys.stdin.fileno()
    with contextlib.suppress(OSError):  # fewer, larger reads (a pipe holds 64 KiB by default)
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, READ_SIZE)
    buf = [bytearray(READ_SIZE)]  # read into one buffer: no allocation per read
    if args.ready_file:
        open(args.ready_file, "w").close()
    total = reads = 0
    first = None
    while True:
        n = os.readv(fd, buf)
        if not n:
            break
        if first is None:
            first = time.monotonic()
        total += n
        reads += 1
    return {"bytes": total, "first": first, "last": time.monotonic(), "reads": reads}


def latency(args) -> dict:
    """One writer handle, one reader blocked in read(): the time from just
    before write() until read() returned the same bytes, message by message.

    The next message is written only after the previous one arrived and the
    reader is back in read() (``gap`` later), so every sample starts with a
    reader already blocked and nothing queued.
    """
    rfd = os.open(args.read, os.O_RDONLY)
    wfd = os.open(args.write, os.O_WRONLY)
    total = args.warmup + args.count
    samples: list[float] = []
    ready = threading.Semaphore(0)
    sent_at = [0.0]
    errors: list[str] = []

    def reader() -> None:
        pending = b""
        for i in range(total):
            ready.release()
            want = args.size
            while len(pending) < want:
                chunk = os.read(rfd, 1 << 16)
                if not chunk:
                    errors.append(f"EOF after {i} messages")
                    ready.release()
                    return
                pending += chunk
            now = time.perf_counter()
            msg, pending = pending[:want], pending[want:]
            if int(msg[:12]) != i:
                errors.append(f"message {i} arrived as {msg[:12]!r}")
            if i >= args.warmup:
                samples.append((now - sent_at[0]) * 1e6)
        ready.release()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    pad = b"x" * (args.size - 13) + b"\n"
    started = time.monotonic()
    for i in range(total):
        ready.acquire()
        if errors:
            break
        time.sleep(args.gap)  # the reader is back inside read() by now
        msg = b"%012d" % i + pad
        sent_at[0] = time.perf_counter()
        os.write(wfd, msg)
    ready.acquire()
    t.join(30)
    wall = time.monotonic() - started
    os.close(wfd)
    os.close(rfd)
    if errors:
        raise SystemExit(f"latency probe: {errors[0]}")
    return {"samples_us": samples, "wall_s": wall}


def fanout(args) -> dict:
    """N pipes at once, one writer and one reader thread each.

    Readers open first; the probe prints {"ready": true} and waits for a line
    on stdin (the harness checks that every reader group is joined), then the
    writers start together.  Reports per pipe when its reader got the first
    and the last byte, and when its writer's last write and close returned.
    """
    pairs = [p.split(":", 1) for p in args.pairs]
    rfds = [os.open(r, os.O_RDONLY) for _, r in pairs]
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    block = os.urandom(args.record)
    results: list[dict | None] = [None] * len(pairs)
    writers: list[dict | None] = [None] * len(pairs)
    start = threading.Barrier(len(pairs) * 2 + 1)

    def write(i: int, path: str) -> None:
        fd = os.open(path, os.O_WRONLY)
        start.wait()
        left = args.bytes
        while left > 0:
            left -= os.write(fd, block[: min(left, args.record)])
        written = time.monotonic()
        os.close(fd)  # waits until everything is stored
        writers[i] = {"written": written, "closed": time.monotonic()}

    def read(i: int) -> None:
        start.wait()
        got, first = 0, None
        buf = [bytearray(READ_SIZE)]
        while True:
            n = os.readv(rfds[i], buf)
            if not n:
                break
            if first is None:
                first = time.monotonic()
            got += n
        results[i] = {"bytes": got, "first": first, "last": time.monotonic()}
        os.close(rfds[i])

    threads = [threading.Thread(target=write, args=(i, w)) for i, (w, _) in enumerate(pairs)]
    threads += [threading.Thread(target=read, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    for result, writer in zip(results, writers):
        if result is not None and writer is not None:
            result.update(writer)
    return {"start": t0, "end": time.monotonic(), "pipes": results}


def sqlite_ceiling(args) -> dict:
    """What SQLite alone takes when it holds the bytes (the embedded store's
    layout before segment files: records as blobs in 64 KiB pages, dnpfs's
    pragmas), *batch* records of *record* bytes per transaction (as the outbox
    batches them), the WAL synced at the end (as close() does); then one SELECT
    of everything.  No FUSE, no daemon."""
    import sqlite3

    path = os.path.join(args.dir, "ceiling.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA page_size=65536")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, pipe INTEGER,"
               " kind TEXT, session TEXT, ts REAL, data BLOB)")
    db.execute("CREATE INDEX records_by_pipe ON records (pipe, id)")
    blob = os.urandom(args.record)
    count = args.bytes // args.record
    start = time.monotonic()
    for at in range(0, count, args.batch):
        rows = [(1, "data", "0123456789abcdef", 0.0, blob)] * min(args.batch, count - at)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO records (pipe, kind, session, ts, data) VALUES (?, ?, ?, ?, ?)",
                       rows)
        db.execute("COMMIT")
    fd = os.open(path + "-wal", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    written = time.monotonic()
    got = sum(len(b) for (b,) in db.execute("SELECT data FROM records ORDER BY id"))
    read = time.monotonic()
    db.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)
    return {"write_s": written - start, "read_s": read - written, "bytes": got,
            "records": count}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    cnt = sub.add_parser("count")
    cnt.add_argument("--ready-file")
    lat = sub.add_parser("latency")
    lat.add_argument("write")
    lat.add_argument("read")
    lat.add_argument("--count", type=int, default=1000)
    lat.add_argument("--warmup", type=int, default=20)
    lat.add_argument("--size", type=int, default=100)
    lat.add_argument("--gap", type=float, default=0.002)
    fan = sub.add_parser("fanout")
    fan.add_argument("--pairs", nargs="+", required=True, metavar="WRITE:READ")
    fan.add_argument("--bytes", type=int, required=True, help="per pipe")
    fan.add_argument("--record", type=int, default=128 << 10)
    sq = sub.add_parser("sqlite")
    sq.add_argument("--dir", required=True)
    sq.add_argument("--bytes", type=int, required=True)
    sq.add_argument("--record", type=int, default=128 << 10)
    sq.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    out = {"count": count, "latency": latency, "fanout": fanout,
           "sqlite": sqlite_ceiling}[args.cmd](args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

"""Measured steps: one transfer or one latency probe, with what it cost.

Every step returns a plain dict (seconds, bytes, records, rates, costs), the
unit that results.json is made of.  Scenarios (scenarios.py) put steps side
by side; nothing here compares anything.

Timing rules, the same for every tool:

- a *write* step is the wall time of the writing process (dd, kcat -P), or,
  for the aiokafka script, from after it connected to its last ack;
- a *read* step runs from starting the reader (cat, kcat -C) until the last
  byte came out of it; the reader's output goes to a byte counter (``probes
  count``) that is started first, so its start-up is not timed;
- a *through* step has the reader waiting first (for dnpfs on Kafka: until
  its consumer group is stable), then runs from starting the writer until the
  reader has the last byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .rig import (PYTHON, Admin, Child, Cost, Meter, MiB, RigError, broker_pid, group_of,
                  proc_state, share_group_of, wait_until)

CLIENTS = [PYTHON, "-m", "benchmarks.clients"]
PROBES = [PYTHON, "-m", "benchmarks.probes"]


class Bench:
    """What every step needs: sizes, the work folder, the broker, progress output."""

    def __init__(self, args, work: Path, bootstrap: str | None, prefix: str) -> None:
        self.args = args
        self.work = work
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.broker = broker_pid() if bootstrap else None
        self.admin = Admin(bootstrap) if bootstrap else None
        # Is a pipe's default group a share group?  Only with --share-groups (the
        # mounts' --share-groups auto) on a broker that has them.
        self._shares: bool | None = None if getattr(args, "share_groups", False) else False
        self.started = time.monotonic()
        self._ready_n = 0

    # -- progress ----------------------------------------------------------------
    def clock(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60:02d}:{s % 60:02d}"

    def say(self, text: str) -> None:
        print(f"[{self.clock()}] {text}", flush=True)

    def run(self, label: str, fn: Callable[..., dict], *args, **kw) -> dict:
        """Run one step, showing its label first and its outcome after."""
        print(f"[{self.clock()}]     {label:<42} ", end="", flush=True)
        try:
            result = fn(*args, **kw)
        except BaseException:
            print("FAILED", flush=True)
            raise
        print(describe(result), flush=True)
        return result

    # -- data ----------------------------------------------------------------------
    def source(self, size: int) -> Path:
        """*size* bytes of incompressible data (cached per size)."""
        path = self.work / f"source-{size}.bin"
        if not path.exists():
            block = os.urandom(MiB)
            with open(path, "wb") as f:
                for i in range(size // MiB):
                    f.write(block[i % 4096:] + block[: i % 4096])
                f.write(block[: size % MiB])
        return path

    def parts(self, size: int, record: int) -> tuple[Path, list[str]]:
        """The source cut into files of *record* bytes: kcat -P sends each
        file as one message, exactly, whatever bytes it holds."""
        folder = self.work / f"parts-{size}-{record}"
        names = [f"{i:06d}" for i in range((size + record - 1) // record)]
        if not folder.exists():
            tmp = folder.with_suffix(".tmp")
            tmp.mkdir()
            with open(self.source(size), "rb") as f:
                for name in names:
                    (tmp / name).write_bytes(f.read(record))
            tmp.rename(folder)
        return folder, names

    def lines(self, count: int, size: int = 100) -> Path:
        """*count* text lines of exactly *size* bytes, newline included."""
        path = self.work / f"lines-{count}-{size}.txt"
        if not path.exists():
            pad = "x" * (size - 12)
            with open(path, "w") as f:
                for i in range(count):
                    f.write(f"{i:010d} {pad}\n")
        return path

    def ready_file(self) -> Path:
        self._ready_n += 1
        return self.work / f"ready-{self._ready_n}"

    def timeout(self, nbytes: int) -> float:
        """Generous: only a hung step should ever hit it."""
        return 120 + nbytes / (2 * MiB)

    # -- the broker -----------------------------------------------------------------
    def topic(self, name: str) -> str:
        return self.prefix + name

    def wait_joined(self, pipes: list[str], timeout: float = 60) -> None:
        """dnpfs readers of these pipes hold their partitions (consumer group
        stable; share group: a member assigned)."""
        if self._shares is None:
            self._shares = self.admin.shares()
        if self._shares:
            groups = [share_group_of(self.topic(p)) for p in pipes]
            wait_until(lambda: self.admin.share_groups_assigned(groups), timeout,
                       f"{len(groups)} share group(s) to have an assigned member", interval=0.1)
            return  # a share group starts at the oldest record: no cursor to read
        groups = [group_of(self.topic(p)) for p in pipes]
        wait_until(lambda: self.admin.groups_stable(groups), timeout,
                   f"{len(groups)} reader group(s) to be stable", interval=0.1)
        time.sleep(0.3)  # the member reads its committed cursor after the assignment


def describe(result: dict) -> str:
    """One line for the progress output."""
    if "waves" in result:
        return "RSS MiB: start {:.0f}, ".format(result["start"]) + ", ".join(
            f"{w['readers']} readers {w['rss']:.0f}" for w in result["waves"])
    if "p50_us" in result:
        return (f"p50 {result['p50_us'] / 1000:7.2f} ms   p99 {result['p99_us'] / 1000:7.2f} ms"
                f"   ({result['n']} msgs)")
    text = f"{result['seconds']:7.2f} s"
    if result.get("bytes"):
        text += f"  {result['mib_s']:8.1f} MiB/s"
    if result.get("records_s") and result.get("record_size", 1 << 20) < 4096:
        text += f"  {result['records_s']:9.0f} rec/s"
    if result.get("write_seconds"):
        text += f"  (writer done {result['write_seconds']:.2f} s)"
    return text


def _measure(seconds: float, nbytes: int, records: int, cost: Cost, record_size: int,
             **extra) -> dict:
    seconds = max(seconds, 1e-6)
    return {
        "seconds": round(seconds, 4),
        "bytes": nbytes,
        "records": records,
        "record_size": record_size,
        "mib_s": round(nbytes / MiB / seconds, 2),
        "records_s": round(records / seconds, 1),
        **{k: v for k, v in extra.items() if v is not None},
        **cost.as_dict(),
    }


def _json(raw: bytes) -> dict:
    lines = [line for line in raw.decode().splitlines() if line.strip().startswith("{")]
    if not lines:
        raise RigError(f"no result from a probe: {raw[-300:]!r}")
    return json.loads(lines[-1])


class _Counter:
    """``probes count`` reading from a pipe whose write end a reader gets."""

    def __init__(self, bench: Bench, timeout: float) -> None:
        ready = bench.ready_file()
        r, self.write_end = os.pipe()
        self.child = Child([*PROBES, "count", "--ready-file", str(ready)], stdin=r,
                           timeout=timeout)
        os.close(r)
        wait_until(ready.exists, 20, "the byte counter to start", interval=0.005)

    def attach(self) -> int:
        return self.write_end

    def detach(self) -> None:
        os.close(self.write_end)

    def result(self) -> dict:
        return _json(self.child.wait().out)


def _check_bytes(got: int, want: int, what: str) -> None:
    if got != want:
        raise RigError(f"{what}: {got} bytes arrived, {want} were written")


# -- files: dd, cat (a local FIFO or dnpfs pipes) -----------------------------------

def dd_write(bench: Bench, src: Path, dst: Path, nbytes: int, bs: int,
             daemons: list[int]) -> dict:
    """dd into a pipe that nobody reads yet: returns when close() did (every
    record stored)."""
    with Meter(daemons, bench.broker) as m:
        c = Child(["dd", f"if={src}", f"of={dst}", f"bs={bs}", "status=none"],
                  timeout=bench.timeout(nbytes)).wait()
        m.add_client(c.usage)
    return _measure(c.seconds, nbytes, -(-nbytes // bs), m.cost, bs)


def cat_read(bench: Bench, path: Path, nbytes: int, records: int, record_size: int,
             daemons: list[int]) -> dict:
    """cat the backlog of a pipe to EOF."""
    return read_with(bench, ["cat", str(path)], nbytes, records, record_size, daemons)


def read_with(bench: Bench, argv: list[str], nbytes: int, records: int, record_size: int,
              daemons: list[int]) -> dict:
    counter = _Counter(bench, bench.timeout(nbytes))
    with Meter(daemons, bench.broker) as m:
        start = time.monotonic()
        reader = Child(argv, stdout=counter.attach(), timeout=bench.timeout(nbytes))
        counter.detach()
        got = counter.result()
        reader.wait()
        m.add_client(reader.usage)
    _check_bytes(got["bytes"], nbytes, argv[0])
    return _measure(got["last"] - start, nbytes, records, m.cost, record_size,
                    first_byte_s=round(got["first"] - start, 4) if got["first"] else None)


def through(bench: Bench, reader_argv: list[str], writer_argv: list[str], nbytes: int,
            records: int, record_size: int, daemons: list[int],
            ready: Callable[[Child], None], writer_cwd: Path | None = None,
            writer_stdin: Path | None = None) -> dict:
    """Reader waiting first (*ready* returns when it is), then the writer:
    from the writer's start until the reader has the last byte."""
    counter = _Counter(bench, bench.timeout(nbytes))
    reader = Child(reader_argv, stdout=counter.attach(), timeout=bench.timeout(nbytes) + 60)
    counter.detach()
    try:
        ready(reader)
        with Meter(daemons, bench.broker) as m:
            start = time.monotonic()
            with open(writer_stdin, "rb") if writer_stdin else contextlib.nullcontext() as stdin:
                writer = Child(writer_argv, cwd=writer_cwd, stdin=stdin,
                               timeout=bench.timeout(nbytes))
                writer.wait()
            got = counter.result()
            reader.wait()
            m.add_client(writer.usage)
            m.add_client(reader.usage)
    except BaseException:
        reader.kill()
        counter.child.kill()
        raise
    _check_bytes(got["bytes"], nbytes, reader_argv[0])
    return _measure(got["last"] - start, nbytes, records, m.cost, record_size,
                    write_seconds=round(writer.ended - start, 4),
                    first_byte_s=round(got["first"] - start, 4) if got["first"] else None)


def blocked(child: Child) -> None:
    """Ready once the reader sits in a syscall (open or read) for a moment."""
    wait_until(lambda: proc_state(child.pid) in ("S", "D"), 20, f"{child.name} to block")
    time.sleep(0.2)


def fifo_through(bench: Bench, src: Path, nbytes: int, bs: int) -> dict:
    """The ceiling: the same dd and cat through a local kernel FIFO."""
    fifo = bench.work / f"local-{time.monotonic_ns()}.fifo"
    os.mkfifo(fifo)
    try:
        return through(bench, ["cat", str(fifo)],
                       ["dd", f"if={src}", f"of={fifo}", f"bs={bs}", "status=none"],
                       nbytes, -(-nbytes // bs), bs, [], blocked)
    finally:
        fifo.unlink()


def dnpfs_through(bench: Bench, src: Path, write_path: Path, read_path: Path, nbytes: int,
                  bs: int, daemons: list[int], kafka_pipe: str | None) -> dict:
    """dd into mount A while cat reads the same pipe on mount B."""
    def ready(child: Child) -> None:
        blocked(child)
        if kafka_pipe:
            bench.wait_joined([kafka_pipe])

    return through(bench, ["cat", str(read_path)],
                   ["dd", f"if={src}", f"of={write_path}", f"bs={bs}", "status=none"],
                   nbytes, -(-nbytes // bs), bs, daemons, ready)


# -- kcat -------------------------------------------------------------------------------

def _kcat(bench: Bench, *args: str) -> list[str]:
    return ["kcat", "-b", bench.bootstrap, "-q", *args]


def kcat_producer(bench: Bench, topic: str, files: list[str] | None = None) -> list[str]:
    """kcat -P with the same guarantees dnpfs gives (acks=all, idempotent).
    With *files*, each file is one message; else each stdin line is one."""
    return [*_kcat(bench, "-P", "-t", topic, "-p", "0", "-X", "enable.idempotence=true",
                   "-X", "acks=all"), *(files or [])]


def kcat_write(bench: Bench, topic: str, cwd: Path, files: list[str], nbytes: int,
               record: int) -> dict:
    with Meter([], bench.broker) as m:
        c = Child(kcat_producer(bench, topic, files), cwd=cwd, timeout=bench.timeout(nbytes))
        c.wait()
        m.add_client(c.usage)
    return _measure(c.seconds, nbytes, len(files), m.cost, record)


def kcat_write_lines(bench: Bench, topic: str, lines: Path, count: int, size: int) -> dict:
    """One message per line (kcat drops the newline: size-1 bytes each)."""
    with Meter([], bench.broker) as m, open(lines, "rb") as stdin:
        c = Child(kcat_producer(bench, topic), stdin=stdin, timeout=bench.timeout(count * size))
        c.wait()
        m.add_client(c.usage)
    return _measure(c.seconds, count * size, count, m.cost, size)


def kcat_consumer(bench: Bench, topic: str, count: int, newline: bool = False) -> list[str]:
    """Payloads only, from the beginning, exiting after *count* messages.

    Not -e: librdkafka reports the end of a partition only after a fetch that
    waited fetch.wait.max.ms (500 ms) for more, a constant that would count
    against kcat.  -c stops at the last message.
    """
    fmt = "%s\\n" if newline else "%s"
    return _kcat(bench, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-c", str(count),
                 "-f", fmt)


def kcat_read(bench: Bench, topic: str, nbytes: int, records: int, record: int) -> dict:
    return read_with(bench, kcat_consumer(bench, topic, records), nbytes, records, record, [])


def kcat_through(bench: Bench, topic: str, cwd: Path | None, files: list[str] | None,
                 nbytes: int, records: int, record: int, lines: Path | None = None) -> dict:
    def ready(_child: Child) -> None:
        time.sleep(1.0)  # kcat has its metadata and waits at offset 0

    return through(bench, kcat_consumer(bench, topic, records, newline=lines is not None),
                   kcat_producer(bench, topic, files), nbytes, records, record, [], ready,
                   writer_cwd=cwd, writer_stdin=lines)


# -- the plain aiokafka script ---------------------------------------------------------

def ref_write(bench: Bench, topic: str, src: Path, nbytes: int, record: int) -> dict:
    with Meter([], bench.broker) as m:
        c = Child([*CLIENTS, "produce", bench.bootstrap, topic, str(src), "--record", str(record)],
                  timeout=bench.timeout(nbytes)).wait()
        m.add_client(c.usage)
    out = _json(c.out)
    return _measure(out["end"] - out["start"], nbytes, out["records"], m.cost, record,
                    process_seconds=round(c.seconds, 4))


def ref_read(bench: Bench, topic: str, nbytes: int, records: int, record: int,
             add: int = 0) -> dict:
    with Meter([], bench.broker) as m:
        c = Child([*CLIENTS, "consume", bench.bootstrap, topic, "--bytes", str(nbytes),
                   "--add", str(add)], timeout=bench.timeout(nbytes)).wait()
        m.add_client(c.usage)
    out = _json(c.out)
    _check_bytes(out["bytes"], nbytes, "aiokafka consumer")
    return _measure(out["last"] - out["start"], nbytes, records, m.cost, record,
                    first_byte_s=round(out["first"] - out["start"], 4),
                    process_seconds=round(c.seconds, 4))


def ref_through(bench: Bench, topic: str, src: Path, nbytes: int, records: int, record: int,
                add: int = 0) -> dict:
    consumer = Child([*CLIENTS, "consume", bench.bootstrap, topic, "--bytes", str(nbytes),
                      "--add", str(add), "--ready"], stdout=subprocess.PIPE,
                     timeout=bench.timeout(nbytes) + 60)
    try:
        line = consumer.proc.stdout.readline()
        if b"ready" not in line:
            raise RigError(f"aiokafka consumer did not start: {line!r}")
        with Meter([], bench.broker) as m:
            producer = Child([*CLIENTS, "produce", bench.bootstrap, topic, str(src),
                              "--record", str(record)], timeout=bench.timeout(nbytes)).wait()
            rest = consumer.proc.stdout.read()
            consumer.wait()
            m.add_client(producer.usage)
            m.add_client(consumer.usage)
    except BaseException:
        consumer.kill()
        raise
    p, c = _json(producer.out), _json(rest)
    _check_bytes(c["bytes"], nbytes, "aiokafka consumer")
    return _measure(c["last"] - p["start"], nbytes, records, m.cost, record,
                    write_seconds=round(p["end"] - p["start"], 4),
                    first_byte_s=round(c["first"] - p["start"], 4))


# -- latency -------------------------------------------------------------------------------

def percentiles(samples_us: list[float]) -> dict:
    s = sorted(samples_us)
    n = len(s)

    def q(p: float) -> float:
        return round(s[min(n - 1, max(0, int(p * n + 0.5) - 1))], 1)  # nearest rank

    return {"n": n, "p50_us": q(0.50), "p90_us": q(0.90), "p99_us": q(0.99),
            "max_us": round(s[-1], 1), "mean_us": round(sum(s) / n, 1),
            "samples_us": [round(x, 1) for x in s]}


def pooled(parts: list[dict]) -> dict:
    """Latency steps taken in turns as one: their samples' percentiles, their
    other figures (seconds, CPU) added up."""
    samples = [x for p in parts for x in p["samples_us"]]
    figures = percentiles(samples)
    added = {k: round(sum(p[k] for p in parts), 3) for k, v in parts[0].items()
             if k not in figures and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {**figures, **added, "turns": len(parts)}


def file_latency(bench: Bench, write_path: Path, read_path: Path, count: int, size: int,
                 daemons: list[int]) -> dict:
    with Meter(daemons, bench.broker) as m:
        c = Child([*PROBES, "latency", str(write_path), str(read_path), "--count", str(count),
                   "--size", str(size)], timeout=120 + count * 0.2).wait()
        m.add_client(c.usage)
    out = _json(c.out)
    return {**percentiles(out["samples_us"]), "seconds": round(out["wall_s"], 3),
            **m.cost.as_dict()}


def fifo_latency(bench: Bench, count: int, size: int) -> dict:
    fifo = bench.work / f"local-{time.monotonic_ns()}.fifo"
    os.mkfifo(fifo)
    try:
        # open() of a FIFO blocks until both ends open: hold one end here meanwhile
        keep = os.open(fifo, os.O_RDWR)
        try:
            return file_latency(bench, fifo, fifo, count, size, [])
        finally:
            os.close(keep)
    finally:
        fifo.unlink()


def ref_latency(bench: Bench, topic: str, count: int, size: int) -> dict:
    with Meter([], bench.broker) as m:
        c = Child([*CLIENTS, "latency", bench.bootstrap, topic, "--count", str(count),
                   "--size", str(size)], timeout=120 + count * 0.2).wait()
        m.add_client(c.usage)
    out = _json(c.out)
    return {**percentiles(out["samples_us"]), **m.cost.as_dict()}


# -- the embedded store's own ceiling ---------------------------------------------------

def sqlite_ceiling(bench: Bench, nbytes: int, record: int) -> dict:
    """SQLite alone (``probes sqlite``): insert the bytes; the select that
    follows is under the key ``then_read``."""
    with Meter([], None) as m:
        c = Child([*PROBES, "sqlite", "--dir", str(bench.work), "--bytes", str(nbytes),
                   "--record", str(record)], timeout=bench.timeout(nbytes)).wait()
        m.add_client(c.usage)
    out = _json(c.out)
    records = out["records"]
    return {**_measure(out["write_s"], nbytes, records, m.cost, record),
            "then_read": _measure(out["read_s"], nbytes, records, Cost(), record)}


# -- many pipes at once -------------------------------------------------------------------

def fanout(bench: Bench, pairs: list[tuple[Path, Path]], pipes: list[str], per_pipe: int,
           record: int, daemons: list[int]) -> dict:
    """One writer and one reader per pipe, all at once (``probes fanout``)."""
    total = per_pipe * len(pairs)
    probe = Child([*PROBES, "fanout", "--bytes", str(per_pipe), "--record", str(record),
                   "--pairs", *[f"{w}:{r}" for w, r in pairs]],
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, timeout=bench.timeout(total) + 120)
    try:
        line = probe.proc.stdout.readline()
        if b"ready" not in line:
            raise RigError(f"fanout probe did not start: {line!r}")
        bench.wait_joined(pipes, timeout=60 + len(pipes))
        with Meter(daemons, bench.broker) as m:
            probe.proc.stdin.write(b"go\n")
            probe.proc.stdin.close()
            rest = probe.proc.stdout.read()
            probe.wait()
            m.add_client(probe.usage)
    except BaseException:
        probe.kill()
        raise
    out = _json(rest)
    got = sum(p["bytes"] for p in out["pipes"])
    _check_bytes(got, total, "fanout readers")
    seconds = max(p["last"] for p in out["pipes"]) - out["start"]
    slowest = max(p["last"] - out["start"] for p in out["pipes"])
    fastest = min(p["last"] - out["start"] for p in out["pipes"])
    # Where a pipe's time goes, from the start (medians over the pipes): its
    # first byte read, its writer's last write and close returned, its last
    # byte read.
    def median_at(key: str) -> float | None:
        at = sorted(p[key] - out["start"] for p in out["pipes"] if p.get(key) is not None)
        return round(at[len(at) // 2], 3) if at else None

    return _measure(seconds, total, -(-total // record), m.cost, record, pipes=len(pairs),
                    fastest_pipe_s=round(fastest, 3), slowest_pipe_s=round(slowest, 3),
                    **{f"median_{k}_s": median_at(k)
                       for k in ("first", "written", "closed", "last")})


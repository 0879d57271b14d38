"""Start checksummed writers and recording readers (agent.py) and judge what
arrived: every acknowledged record delivered, duplicates counted, per-writer
order, latency from write() to the read() that returned the record."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..conftest import ROOT
from ..mount import Mount
from ..util import wait_for
from .agent import parse

AGENT = [sys.executable, "-m", "tests.faults.agent"]


class Agent:
    def __init__(self, argv: list[str], log: Path, proc: subprocess.Popen | None = None) -> None:
        self.log = log
        self.proc = proc or subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    @classmethod
    def group(cls, argv: list[str], logs: list[Path], **fields) -> list:
        """One process serving several pipes (a thread each); one handle per pipe."""
        proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        out = []
        for i, log in enumerate(logs):
            handle = cls.__new__(cls)
            Agent.__init__(handle, argv, log, proc)
            for k, v in fields.items():
                setattr(handle, k, v[i] if isinstance(v, list) else v)
            out.append(handle)
        return out

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""


class Writer(Agent):
    def __init__(self, path: Path, wid: str, log: Path, *, fsync_every: int = 0,
                 session_every: int = 0, sync: bool = False, rate: float = 0, count: int = 0,
                 pad: int = 0, stop: Path | None = None, hold: bool = False,
                 go: Path | None = None) -> None:
        self.wid = wid
        argv = [*AGENT, "writer", str(path), "--id", wid, "--log", str(log)]
        for flag, value in (("--fsync-every", fsync_every), ("--session-every", session_every),
                            ("--rate", rate), ("--count", count), ("--pad", pad)):
            if value:
                argv += [flag, str(value)]
        if sync:
            argv.append("--sync")
        if hold:
            argv.append("--hold")
        if stop is not None:
            argv += ["--stop", str(stop)]
        if go is not None:
            argv += ["--go", str(go)]
        super().__init__(argv, log)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM: the writer finishes its write, closes (acknowledging) and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def events(self) -> list[dict]:
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # the last line of a killed writer
        return out

    def acked(self) -> set[int]:
        seqs: set[int] = set()
        for e in self.events():
            if "ack" in e:
                seqs.update(range(e["ack"][0], e["ack"][1] + 1))
        return seqs

    def written(self) -> int:
        """The highest seq whose write() returned (-1: none)."""
        return max((e["written"] for e in self.events() if "written" in e), default=-1)

    def written_at(self) -> dict[int, float]:
        """seq -> time.time() when its write() returned."""
        return {e["written"]: e["t"] for e in self.events() if "written" in e and "t" in e}

    def errors(self) -> list[dict]:
        return [e for e in self.events() if "err" in e]

    def worst(self) -> dict[str, float]:
        """Longest open/write/fsync/close, from the exit summary or the slow events."""
        worst: dict[str, float] = {}
        for e in self.events():
            if "stats" in e:
                for op, s in e["stats"].items():
                    worst[op] = max(worst.get(op, 0.0), s)
            if "slow" in e:
                worst[e["slow"]] = max(worst.get(e["slow"], 0.0), e["s"])
        return worst


def writers_for(paths: list[Path], logdir: Path, prefix: str, **opts) -> list[Writer]:
    """One writer process for many pipes; writer ids prefix0, prefix1, ..."""
    argv = [*AGENT, "writer", *map(str, paths), "--id", f"{prefix}{{i}}", "--log",
            str(logdir / f"{prefix}{{i}}.log")]
    for flag, value in opts.items():
        if value is True:
            argv.append("--" + flag.replace("_", "-"))
        elif value:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    logs = [logdir / f"{prefix}{i}.log" for i in range(len(paths))]
    return Writer.group(argv, logs, wid=[f"{prefix}{i}" for i in range(len(paths))])


def readers_for(paths: list[Path], logdir: Path, prefix: str, packet: bool = True,
                size: int = 65536) -> list[Reader]:
    argv = [*AGENT, "reader", *map(str, paths), "--log", str(logdir / f"{prefix}{{i}}.log"),
            "--size", str(size), "--ready", "--reopen"] + (["--packet"] if packet else [])
    return Reader.group(argv, [logdir / f"{prefix}{i}.log" for i in range(len(paths))])


class Reader(Agent):
    def __init__(self, path: Path, log: Path, *, packet: bool = True, reopen: bool = True,
                 size: int = 65536, stop: Path | None = None) -> None:
        argv = [*AGENT, "reader", str(path), "--log", str(log), "--size", str(size), "--ready"]
        if packet:
            argv.append("--packet")
        if reopen:
            argv.append("--reopen")
        if stop is not None:
            argv += ["--stop", str(stop)]
        super().__init__(argv, log)

    def frames(self) -> list[tuple]:
        """("D", t_ns, bytes) | ("E", t_ns) | ("X", t_ns, errno) | ("R", t_ns)."""
        try:
            raw = self.log.read_bytes()
        except FileNotFoundError:
            return []
        out, at = [], 0
        while at < len(raw):
            nl = raw.find(b"\n", at)
            if nl < 0:
                break
            head = raw[at:nl].split()
            at = nl + 1
            if head[0] == b"D":
                n = int(head[2])
                if at + n > len(raw):
                    break  # killed while logging
                out.append(("D", int(head[1]), raw[at:at + n]))
                at += n
            elif head[0] == b"X":
                out.append(("X", int(head[1]), int(head[2])))
            else:
                out.append((head[0].decode(), int(head[1])))
        return out

    def opened(self) -> bool:
        return any(f[0] == "R" for f in self.frames())

    def first_read_after(self, t: float) -> float | None:
        """Seconds from *t* (time.time()) to the first read() that returned data after it."""
        for f in self.frames():
            if f[0] == "D" and f[1] / 1e9 > t:
                return f[1] / 1e9 - t
        return None


@dataclass
class Delivery:
    """What the readers got, judged against what the writers acknowledged."""

    acked: int = 0
    delivered: int = 0  # distinct records
    lost: list[tuple[str, int]] = field(default_factory=list)
    duplicates: int = 0  # records delivered more than once (extra copies)
    duplicate_bytes: int = 0
    corrupt: int = 0  # fragments that are no well-formed record
    phantom: int = 0  # records no writer wrote
    out_of_order: int = 0  # within one reader's stream, a writer's seq went back (not a duplicate)
    eofs: int = 0
    read_errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, first delivery of each record
    warmup_latencies: list[float] = field(default_factory=list)  # of records written before *since*

    @property
    def max_latency(self) -> float:
        return max(self.latencies, default=0.0)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))]

    def summary(self) -> dict:
        out = dict(acked=self.acked, delivered=self.delivered, lost=len(self.lost),
                   duplicates=self.duplicates, duplicate_bytes=self.duplicate_bytes,
                   corrupt=self.corrupt, out_of_order=self.out_of_order)
        if self.read_errors:
            out["read_errors"] = dict(self.read_errors)
        if self.latencies:
            out["latency_p50_ms"] = round(statistics.median(self.latencies) * 1000, 1)
            out["latency_p99_ms"] = round(self.pct(0.99) * 1000, 1)
            out["latency_max_ms"] = round(self.max_latency * 1000, 1)
        return out


def records_of(reader: Reader, packet: bool = True):
    """(t_read_ns, line) per record a reader got; lines split across reads are joined."""
    out, pending, eofs, errors = [], b"", 0, Counter()
    for f in reader.frames():
        if f[0] == "D":
            buf = pending + f[2]
            *lines, pending = buf.split(b"\n")
            out.extend((f[1], line) for line in lines)
        elif f[0] == "E":
            eofs += 1
        elif f[0] == "X":
            errors[os.strerror(f[2])] += 1
    if pending:
        out.append((None, pending))  # an incomplete fragment
    return out, eofs, errors


def judge(writers: list[Writer], readers: list[Reader], since: float = 0.0) -> Delivery:
    """*since* (time.time()): latencies of records written before it count as warm-up."""
    d = Delivery()
    acked = {(w.wid, s) for w in writers for s in w.acked()}
    written = {w.wid: w.written() for w in writers}
    d.acked = len(acked)
    seen: Counter = Counter()
    sizes: dict[tuple[str, int], int] = {}
    for r in readers:
        recs, eofs, errors = records_of(r)
        d.eofs += eofs
        d.read_errors.update(errors)
        last: dict[str, int] = {}
        for t_read, line in recs:
            parsed = parse(line) if t_read is not None else None
            if parsed is None:
                d.corrupt += 1
                continue
            wid, seq, t_write = parsed
            key = (wid, seq)
            if wid not in written or seq > written[wid] + 1:
                # +1: a write() that returned to a writer killed before it could log it
                d.phantom += 1
            if seen[key] == 0:
                lat = max(0.0, (t_read - t_write) / 1e9)
                (d.latencies if t_write / 1e9 >= since else d.warmup_latencies).append(lat)
                if seq < last.get(wid, -1):
                    d.out_of_order += 1
            seen[key] += 1
            sizes[key] = len(line) + 1
            last[wid] = max(last.get(wid, -1), seq)
    d.delivered = len(seen)
    d.lost = sorted(acked - set(seen))
    d.duplicates = sum(c - 1 for c in seen.values())
    d.duplicate_bytes = sum((c - 1) * sizes[k] for k, c in seen.items())
    return d


def wait_delivered(writers: list[Writer], readers: list[Reader], timeout: float,
                   settle: float = 1.0) -> Delivery:
    """Wait until every acknowledged record arrived (then *settle* more seconds
    for late duplicates), or until *timeout*; return the judgement."""
    deadline = time.monotonic() + timeout
    while True:
        d = judge(writers, readers)
        if not d.lost or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if not d.lost and settle:
        time.sleep(settle)
        d = judge(writers, readers)
    return d


def stop_all(agents) -> None:
    for a in agents:
        if a.alive():
            a.proc.kill()
    for a in agents:
        try:
            a.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class Stream:
    """The fault tests' standard load on pipe `p`: made on mount *a*, read
    (whole records, no packets) by one reader per path, written on mount *a*
    by two writers, one that fsyncs every 20 records and one that closes
    (ends its session) every 10, so both ways of acknowledging are tried."""
    readers: list[Reader]
    writers: list[Writer]

    def stop_writers(self, timeout: float) -> None:
        for w in self.writers:
            w.stop(timeout=timeout)

    def writer_errors(self) -> list[str]:
        return [f"{e['op']}:{e['err']}" for w in self.writers for e in w.errors()]

    def worst(self) -> dict[str, float]:
        """Longest open/write/fsync/close of any writer, in seconds."""
        worst: dict[str, float] = {}
        for w in self.writers:
            for op, s in w.worst().items():
                worst[op] = max(worst.get(op, 0), s)
        return worst


@contextlib.contextmanager
def streaming(a: Mount, b: Mount, logdir: Path, *, readers: list[Path] | None = None,
              fsync_rate: int = 200, session_rate: int = 100) -> Iterator[Stream]:
    """Run a Stream from mount *a* to *readers* (default: `p` on mount *b*);
    every agent is killed and both mounts are stopped at the end."""
    agents: list[Agent] = []
    try:
        os.mkfifo(a / "p")
        wait_for(lambda: os.path.exists(b / "p"), 5, what="the pipe on mount b")
        paths = readers or [b / "p"]
        rs = [Reader(path, logdir / f"r{i}.log", packet=False) for i, path in enumerate(paths)]
        agents += rs
        wait_for(lambda: all(r.opened() for r in rs), 10, what="readers open")
        ws = [Writer(a / "p", "w1", logdir / "w1.log", fsync_every=20, rate=fsync_rate),
              Writer(a / "p", "w2", logdir / "w2.log", session_every=10, rate=session_rate)]
        agents += ws
        yield Stream(rs, ws)
    finally:
        stop_all(agents)
        a.stop()
        b.stop()

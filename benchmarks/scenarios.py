"""The scenarios: each puts dnpfs next to its references, measured back to back.

A scenario repeats its steps ``reps`` times, rotating the order of the tools
in each repetition, and keeps every repetition.  A ratio is computed within a
repetition (dnpfs and its reference measured minutes apart would compare two
different machines: other engineers run tests here too) and reported as the
median over repetitions, with the spread.

Each scenario returns a dict for results.json:

    {"title", "params", "reps": [{"dnpfs.write": step, ...}, ...],
     "summary": {"dnpfs.write": medians, ...}, "ratios": {name: {...}}}
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Callable, Iterator

from . import readers, steps
from .rig import MiB, Mount, NullMount, RigError
from .steps import Bench

RATE_KEYS = ("mib_s", "records_s")


# -- mounts -------------------------------------------------------------------------------

@contextlib.contextmanager
def kafka_mounts(bench: Bench, tag: str) -> Iterator[tuple[Mount, Mount]]:
    """Two fresh daemons on the broker, with the run's topic prefix.

    The reader of every Kafka scenario reads every record of a pipe, the job
    kcat -C does: by default through the pipe's default group as a consumer
    group (--share-groups never; the mounts' own default is a share group,
    the work queue), with --share-groups as the share group
    (docs/benchmarks.md says which, ``share_groups_of``)."""
    args = ["--kafka", bench.bootstrap, "--topic-prefix", bench.prefix,
            "--share-groups", share_groups_of(bench.args)]
    with _pair(bench, tag, args) as pair:
        yield pair


@contextlib.contextmanager
def share_mount(bench: Bench, tag: str) -> Iterator[Mount | None]:
    """A third daemon with the mounts' default (--share-groups auto), where
    the run's readers use consumer groups: the bulk read through the group a
    user's `cat` gets, next to the consumer group's and kcat's.  None when
    the run's readers are share groups already."""
    if share_groups_of(bench.args) == "auto":
        yield None
        return
    m = Mount(bench.work / f"{tag}-c", ["--kafka", bench.bootstrap, "--topic-prefix",
                                        bench.prefix], bench.work / f"{tag}-c.log")
    try:
        yield m.start()
    finally:
        m.stop()


def share_groups_of(args) -> str:
    """The --share-groups of a run's Kafka mounts (args None: the smoke test)."""
    return "auto" if getattr(args, "share_groups", False) else "never"


@contextlib.contextmanager
def store_mounts(bench: Bench, tag: str) -> Iterator[tuple[Mount, Mount]]:
    """Two fresh daemons sharing one new SQLite store (two containers, one volume)."""
    store = bench.work / f"{tag}-store" / "dnpfs.sqlite"
    with _pair(bench, tag, ["--store", str(store)]) as pair:
        yield pair


@contextlib.contextmanager
def null_mount(bench: Bench, tag: str) -> Iterator[Mount]:
    """The FUSE ceiling (benchmarks/nullfs.py)."""
    m = NullMount(bench.work / f"{tag}-null", bench.work / f"{tag}-null.log")
    try:
        yield m.start()
    finally:
        m.stop()


@contextlib.contextmanager
def _pair(bench: Bench, tag: str, args: list[str]) -> Iterator[tuple[Mount, Mount]]:
    mounts = [Mount(bench.work / f"{tag}-{x}", args, bench.work / f"{tag}-{x}.log")
              for x in "ab"]
    try:
        for m in mounts:
            m.start()
        yield mounts[0], mounts[1]
    finally:
        for m in mounts:
            m.stop()


# -- summaries ----------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def summarize(reps: list[dict]) -> dict:
    """Per step key: the median of every numeric field over the repetitions."""
    out: dict[str, dict] = {}
    for key in reps[0]:
        rows = [r[key] for r in reps if key in r]
        fields = {}
        for name, value in rows[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                fields[name] = _median([r[name] for r in rows if name in r])
            elif name == "per_daemon_cpu_s" and value:  # element by element
                fields[name] = [_median(list(xs)) for xs in zip(*(r[name] for r in rows))]
        out[key] = fields
    return out


def ratio(reps: list[dict], num: str, den: str, field: str = "mib_s",
          fn: Callable[[float, float], float] = lambda a, b: a / b) -> dict:
    """*fn*(num, den) of one field, per repetition, and its median."""
    per = [round(fn(r[num][field], r[den][field]), 4) for r in reps
           if num in r and den in r and r[den][field]]
    if not per:
        return {}
    return {"num": num, "den": den, "field": field, "median": _median(per),
            "min": min(per), "max": max(per), "per_rep": per}


def _rotate(items: list, n: int) -> list:
    n %= len(items)
    return items[n:] + items[:n]


def _repeat(bench: Bench, count: int, tag: str,
            parts: Callable[[dict, str], list[Callable[[], None]]], topics: bool = False
            ) -> list[dict]:
    """*count* repetitions of the parts that ``parts(row, sub)`` returns, run in
    an order rotated by one at each repetition; they fill *row* and name their
    pipes and topics ``sub + ...`` (sub: "bulk0.", "bulk1." ...).  With *topics*,
    each repetition's topics are deleted after it."""
    reps = []
    for rep in range(count):
        row: dict[str, dict] = {}
        sub = f"{tag}{rep}."
        todo = parts(row, sub)
        bench.say(f"  repetition {rep + 1}/{count}")
        for part in _rotate(todo, rep):
            part()
        reps.append(row)
        if topics:
            bench.admin.delete_prefix(bench.topic(sub))
    return reps


def _fifos(mount: Mount, sub: str) -> tuple[str, str]:
    """Two new pipes: one to write then read, one to go through at once."""
    pipe, thru = sub + "dnpfs", sub + "dnpfs-thru"
    os.mkfifo(mount / pipe)
    os.mkfifo(mount / thru)
    return pipe, thru


def _topics(bench: Bench, sub: str, tool: str) -> tuple[str, str]:
    """The same two, as topics of a reference *tool*."""
    t, thru = bench.topic(sub + tool), bench.topic(sub + tool + "-thru")
    bench.admin.create([t, thru])
    return t, thru


def _dnpfs_bulk(bench: Bench, row: dict, A: Mount, B: Mount, sub: str, src, size: int,
                record: int, kafka: bool) -> tuple[str, str]:
    """dd into mount A, cat from mount B, then both at once through a second
    pipe: row's dnpfs.write, dnpfs.read and dnpfs.through.  Returns the pipes."""
    records = -(-size // record)
    daemons = [A.pid, B.pid]
    pipe, thru = _fifos(A, sub)
    row["dnpfs.write"] = bench.run("dnpfs write (dd -> mount A)", steps.dd_write, bench, src,
                                   A / pipe, size, record, daemons)
    row["dnpfs.read"] = bench.run("dnpfs read (cat <- mount B)", steps.cat_read, bench, B / pipe,
                                  size, records, record, daemons)
    row["dnpfs.through"] = bench.run("dnpfs through (dd A | cat B at once)", steps.dnpfs_through,
                                     bench, src, A / thru, B / thru, size, record, daemons,
                                     thru if kafka else None)
    return pipe, thru


def _scenario(title: str, params: dict, reps: list[dict], ratios: dict) -> dict:
    return {"title": title, "params": params, "reps": reps, "summary": summarize(reps),
            "ratios": {k: v for k, v in ratios.items() if v}}


# -- bulk over Kafka ------------------------------------------------------------------------

def bulk_kafka(bench: Bench) -> dict:
    """1 GiB in 128 KiB records: dnpfs (dd into mount A, cat from mount B) next
    to kcat, the plain aiokafka script, and a local FIFO."""
    a = bench.args
    size, record = a.bulk_mib * MiB, a.record_kib << 10
    records = -(-size // record)
    src = bench.source(size)
    folder, files = bench.parts(size, record)
    bench.say(f"bulk over Kafka: {a.bulk_mib} MiB in {a.record_kib} KiB records, {a.reps} rep(s)")
    with kafka_mounts(bench, "bulk") as (A, B), null_mount(bench, "bulk") as N, \
            share_mount(bench, "bulk") as C:
        def parts(row: dict, sub: str) -> list[Callable[[], None]]:
            def dnpfs() -> None:
                pipe, _ = _dnpfs_bulk(bench, row, A, B, sub, src, size, record, kafka=True)
                if C is not None:  # the same backlog through the mounts' default group
                    row["dnpfs_share.read"] = bench.run(
                        "dnpfs read, share group (cat <- mount C)", steps.cat_read, bench,
                        C / pipe, size, records, record, [A.pid, B.pid, C.pid])

            def kcat() -> None:
                t, thru = _topics(bench, sub, "kcat")
                row["kcat.write"] = bench.run("kcat -P (one file = one message)", steps.kcat_write,
                                              bench, t, folder, files, size, record)
                row["kcat.read"] = bench.run("kcat -C -c N", steps.kcat_read, bench, t, size,
                                             records, record)
                row["kcat.through"] = bench.run("kcat -P | kcat -C at once", steps.kcat_through,
                                                bench, thru, folder, files, size, records, record)

            def aiokafka() -> None:
                t, thru = _topics(bench, sub, "aiokafka")
                row["aiokafka.write"] = bench.run("aiokafka producer", steps.ref_write, bench, t,
                                                  src, size, record)
                row["aiokafka.read"] = bench.run("aiokafka consumer", steps.ref_read, bench, t,
                                                 size, records, record)
                row["aiokafka.through"] = bench.run("aiokafka producer | consumer at once",
                                                    steps.ref_through, bench, thru, src, size,
                                                    records, record)

            def fifo() -> None:
                row["fifo.through"] = bench.run("local FIFO (dd | cat)", steps.fifo_through,
                                                bench, src, size, record)

            def fuse() -> None:
                row["fuse.write"] = bench.run("FUSE ceiling: dd -> nullfs", steps.dd_write,
                                              bench, src, N / "sink", size, record, [N.pid])
                row["fuse.read"] = bench.run("FUSE ceiling: cat <- nullfs", steps.cat_read,
                                             bench, N / f"source-{size}", size, records, record,
                                             [N.pid])

            return [fifo, fuse, dnpfs, kcat, aiokafka]

        reps = _repeat(bench, a.reps, "bulk", parts, topics=True)
    ratios = {
        "write_vs_kcat": ratio(reps, "dnpfs.write", "kcat.write"),
        "read_vs_kcat": ratio(reps, "dnpfs.read", "kcat.read"),
        "through_vs_kcat": ratio(reps, "dnpfs.through", "kcat.through"),
        "write_vs_aiokafka": ratio(reps, "dnpfs.write", "aiokafka.write"),
        "read_vs_aiokafka": ratio(reps, "dnpfs.read", "aiokafka.read"),
        "through_vs_aiokafka": ratio(reps, "dnpfs.through", "aiokafka.through"),
        "through_vs_fifo": ratio(reps, "dnpfs.through", "fifo.through"),
        "write_vs_fuse": ratio(reps, "dnpfs.write", "fuse.write"),
        "read_vs_fuse": ratio(reps, "dnpfs.read", "fuse.read"),
        "kcat_through_vs_fifo": ratio(reps, "kcat.through", "fifo.through"),
        "aiokafka_write_vs_kcat": ratio(reps, "aiokafka.write", "kcat.write"),
        "aiokafka_read_vs_kcat": ratio(reps, "aiokafka.read", "kcat.read"),
        # How far FUSE and pyfuse3 alone get next to kcat: a target above it
        # is bound by the binding, not by dnpfs.
        "fuse_write_vs_kcat": ratio(reps, "fuse.write", "kcat.write"),
        "fuse_read_vs_kcat": ratio(reps, "fuse.read", "kcat.read"),
        "share_read_vs_kcat": ratio(reps, "dnpfs_share.read", "kcat.read"),
        "share_read_vs_consumer": ratio(reps, "dnpfs_share.read", "dnpfs.read"),
    }
    return _scenario("Bulk over Kafka", {"bytes": size, "record": record, "reps": a.reps},
                     reps, ratios)


# -- small writes over Kafka ------------------------------------------------------------------

def small_writes(bench: Bench) -> dict:
    """100-byte lines, one write() each through one open handle (dd bs=100),
    next to kcat -P and the aiokafka script producing the same lines."""
    a = bench.args
    n, size = a.lines, 100
    lines = bench.lines(n, size)
    nbytes = n * size
    bench.say(f"small writes over Kafka: {n} lines of {size} bytes, {a.reps_small} rep(s)")
    with kafka_mounts(bench, "small") as (A, B), null_mount(bench, "small") as N:
        daemons = [A.pid, B.pid]

        def parts(row: dict, sub: str) -> list[Callable[[], None]]:
            def dnpfs() -> None:
                pipe, thru = _fifos(A, sub)
                row["dnpfs.write"] = bench.run("dnpfs: dd bs=100 -> mount A", steps.dd_write,
                                               bench, lines, A / pipe, nbytes, size, daemons)
                row["dnpfs.through"] = bench.run("dnpfs: dd bs=100 A | cat B", steps.dnpfs_through,
                                                 bench, lines, A / thru, B / thru, nbytes, size,
                                                 daemons, thru)

            def kcat() -> None:
                t, thru = _topics(bench, sub, "kcat")
                row["kcat.write"] = bench.run("kcat -P < lines", steps.kcat_write_lines, bench, t,
                                              lines, n, size)
                row["kcat.through"] = bench.run("kcat -P | kcat -C at once", steps.kcat_through,
                                                bench, thru, None, None, nbytes, n, size,
                                                lines=lines)

            def aiokafka() -> None:
                t, thru = _topics(bench, sub, "aiokafka")
                row["aiokafka.write"] = bench.run("aiokafka producer, send() per line",
                                                  steps.ref_write, bench, t, lines, nbytes, size)
                row["aiokafka.through"] = bench.run("aiokafka producer | consumer",
                                                    steps.ref_through, bench, thru, lines, nbytes,
                                                    n, size)

            def fuse() -> None:
                row["fuse.write"] = bench.run("FUSE ceiling: dd bs=100 -> nullfs",
                                              steps.dd_write, bench, lines, N / "sink", nbytes,
                                              size, [N.pid])

            return [dnpfs, fuse, kcat, aiokafka]

        reps = _repeat(bench, a.reps_small, "small", parts, topics=True)
    ratios = {
        "write_vs_kcat": ratio(reps, "dnpfs.write", "kcat.write", "records_s"),
        "write_vs_aiokafka": ratio(reps, "dnpfs.write", "aiokafka.write", "records_s"),
        "through_vs_kcat": ratio(reps, "dnpfs.through", "kcat.through", "records_s"),
        "through_vs_aiokafka": ratio(reps, "dnpfs.through", "aiokafka.through", "records_s"),
        "write_vs_fuse": ratio(reps, "dnpfs.write", "fuse.write", "records_s"),
    }
    return _scenario("Small writes over Kafka", {"lines": n, "size": size, "reps": a.reps_small},
                     reps, ratios)


# -- latency over Kafka ----------------------------------------------------------------------

LATENCY_TURNS = 4  # the messages of each of dnpfs and aiokafka, in this many turns


def latency_kafka(bench: Bench) -> dict:
    """A 100-byte write on mount A to a reader blocked on mount B, one at a
    time, next to a raw aiokafka produce-to-consume loop and a local FIFO."""
    a = bench.args
    n, size = a.latency_count, 100
    bench.say(f"latency over Kafka: {n} messages of {size} bytes, one at a time")
    row: dict[str, dict] = {}
    with kafka_mounts(bench, "latency") as (A, B):
        os.mkfifo(A / "lat.dnpfs")
        topic = bench.topic("lat.aiokafka")
        bench.admin.create([topic])
        row["fifo"] = bench.run("local FIFO", steps.fifo_latency, bench, n, size)
        # dnpfs and aiokafka in turns (ABBA), their samples pooled: a spell of
        # background work (the broker's after the bulk steps, other programs)
        # then falls on both alike instead of on whichever ran during it.
        chunks: dict[str, list[dict]] = {"dnpfs": [], "aiokafka": []}
        per = max(1, n // LATENCY_TURNS)
        for turn in range(LATENCY_TURNS):
            for who in (("dnpfs", "aiokafka") if turn % 2 == 0 else ("aiokafka", "dnpfs")):
                if who == "dnpfs":
                    chunks[who].append(bench.run(
                        f"dnpfs: write on A, read on B ({turn + 1}/{LATENCY_TURNS})",
                        steps.file_latency, bench, A / "lat.dnpfs", B / "lat.dnpfs", per, size,
                        [A.pid, B.pid]))
                else:
                    chunks[who].append(bench.run(
                        f"aiokafka: send -> getone ({turn + 1}/{LATENCY_TURNS})",
                        steps.ref_latency, bench, topic, per, size))
        row["dnpfs"], row["aiokafka"] = (steps.pooled(chunks[k]) for k in ("dnpfs", "aiokafka"))
    bench.admin.delete_prefix(bench.topic("lat."))
    reps = [row]
    ratios = {
        "p50_minus_aiokafka_ms": ratio(reps, "dnpfs", "aiokafka", "p50_us",
                                       lambda x, y: (x - y) / 1000),
        "p99_vs_aiokafka": ratio(reps, "dnpfs", "aiokafka", "p99_us"),
    }
    return _scenario("Latency over Kafka", {"messages": n, "size": size}, reps, ratios)


# -- many pipes ----------------------------------------------------------------------------------

def scaling(bench: Bench) -> dict:
    """Aggregate throughput with N pipes at once (one writer and one reader
    each, dnpfs on Kafka), the same total amount of data at every N."""
    a = bench.args
    counts = [int(x) for x in a.scale_pipes.split(",")]
    total, record = a.scale_mib * MiB, a.record_kib << 10
    bench.say(f"scaling over Kafka: {a.scale_mib} MiB in total over {counts} pipes")
    row: dict[str, dict] = {}
    with kafka_mounts(bench, "scaling") as (A, B):
        for n in counts:
            sub = f"scale{n}."
            pipes = [f"{sub}{i:02d}" for i in range(n)]
            bench.admin.create([bench.topic(p) for p in pipes])
            for p in pipes:  # both mounts see them (a lookup asks the broker)
                if not (os.path.exists(A / p) and os.path.exists(B / p)):
                    raise RigError(f"pipe {p} not visible on the mounts")
            per_pipe = total // n
            step = bench.run(f"{n:3d} pipe(s), {per_pipe / MiB:.0f} MiB each", steps.fanout,
                             bench, [(A / p, B / p) for p in pipes], pipes, per_pipe, record,
                             [A.pid, B.pid])
            step["cores_busy_daemons"] = round(step["daemon_cpu_s"] / step["seconds"], 3)
            step["cores_busy_max_daemon"] = round(
                max(step["per_daemon_cpu_s"]) / step["seconds"], 3)
            step["cores_busy_broker"] = round(step["broker_cpu_s"] / step["seconds"], 3)
            step["cores_busy_machine"] = round(step["machine_busy_s"] / step["wall_s"], 3)
            row[f"pipes.{n}"] = step
            bench.admin.delete_prefix(bench.topic(sub))
    reps = [row]
    first = f"pipes.{counts[0]}"
    ratios = {f"pipes_{n}_vs_{counts[0]}": ratio(reps, f"pipes.{n}", first) for n in counts[1:]}
    return _scenario("Scaling over Kafka", {"total_bytes": total, "record": record,
                                            "pipes": counts}, reps, ratios)


def readers_memory(bench: Bench) -> dict:
    """What a reading daemon holds for readers that keep their files open
    (benchmarks/readers.py), at its default fetch budget (--fetch-mib 64)."""
    few, many = (int(x) for x in bench.args.readers.split(","))
    big, small = (readers.BIG, readers.SMALL) if not bench.args.quick else (1 << 20, 256 << 10)
    bench.say(f"reading daemon memory: {few} readers on pipes of {big / MiB:.1f} MiB, then"
              f" {many} (the others {small >> 10} KiB), each reading {readers.READ >> 10} KiB"
              " and keeping its file open")
    with kafka_mounts(bench, "readers") as (A, B):
        sub = "readers."
        pipes = [f"{sub}{i:04d}" for i in range(many)]
        bench.admin.create([bench.topic(p) for p in pipes])
        for p in pipes:  # both mounts see them (a lookup asks the broker)
            if not (os.path.exists(A / p) and os.path.exists(B / p)):
                raise RigError(f"pipe {p} not visible on the mounts")
        readers.fill([A / p for p in pipes[:few]], big)
        readers.fill([A / p for p in pipes[few:]], small)
        held = bench.run(f"{few} then {many} readers holding files open", readers.hold, B.pid,
                         # A named group: the budget is the consumer groups' (the default
                         # group is a share group where the broker has them).
                         [[B / f"{p}@g" for p in pipes[:few]], [B / f"{p}@g" for p in pipes[few:]]])
        bench.admin.delete_prefix(bench.topic(sub))
    return {"title": "Memory of readers (Kafka)",
            "params": {"few": few, "many": many, "big": big, "small": small,
                       "read": readers.READ, "budget_mib": 64},
            "reps": [{"dnpfs.readers": held}]}


# -- the embedded store --------------------------------------------------------------------------

def embedded(bench: Bench) -> dict:
    """Bulk, small writes and latency between two mounts of one SQLite store,
    next to a local FIFO and the store-nothing pyfuse3 filesystem."""
    a = bench.args
    # dd bs=1M by default: the core issue's measure (the kernel's largest FUSE write).
    size, record = a.embedded_mib * MiB, a.embedded_record_kib << 10
    src = bench.source(size)
    n_lines, line = a.lines, 100
    lines = bench.lines(n_lines, line)
    bench.say(f"embedded store: {a.embedded_mib} MiB in {a.embedded_record_kib} KiB records,"
              f" {a.reps} rep(s); small writes {n_lines} lines; latency {a.latency_count}"
              " messages")
    with store_mounts(bench, "embedded") as (A, B), null_mount(bench, "embedded") as N:
        daemons = [A.pid, B.pid]

        def parts(row: dict, sub: str) -> list[Callable[[], None]]:
            def dnpfs() -> None:
                for pipe in _dnpfs_bulk(bench, row, A, B, sub, src, size, record, kafka=False):
                    os.unlink(A / pipe)

            def fuse() -> None:
                records = -(-size // record)
                row["fuse.write"] = bench.run("FUSE ceiling: dd -> nullfs", steps.dd_write,
                                              bench, src, N / "sink", size, record, [N.pid])
                row["fuse.read"] = bench.run("FUSE ceiling: cat <- nullfs", steps.cat_read,
                                             bench, N / f"source-{size}", size, records, record,
                                             [N.pid])

            def small() -> None:
                pipe = sub + "small"
                os.mkfifo(A / pipe)
                row["dnpfs.small"] = bench.run("small writes: dd bs=100 -> mount A",
                                               steps.dd_write, bench, lines, A / pipe,
                                               n_lines * line, line, daemons)
                os.unlink(A / pipe)
                row["fuse.small"] = bench.run("small writes: dd bs=100 -> nullfs",
                                              steps.dd_write, bench, lines, N / "sink",
                                              n_lines * line, line, [N.pid])

            def fifo() -> None:
                row["fifo.through"] = bench.run("local FIFO (dd | cat)", steps.fifo_through,
                                                bench, src, size, record)

            def sqlite() -> None:
                step = bench.run("SQLite alone: insert (then select)", steps.sqlite_ceiling,
                                 bench, size, record)
                row["sqlite.read"] = step.pop("then_read")
                row["sqlite.write"] = step

            return [fifo, sqlite, dnpfs, fuse, small]

        reps = _repeat(bench, a.reps, "bulk", parts)
        os.mkfifo(A / "lat")
        lat = {
            "fifo": bench.run("latency: local FIFO", steps.fifo_latency, bench, a.latency_count,
                              100),
            "dnpfs": bench.run("latency: write on A, read on B", steps.file_latency, bench,
                               A / "lat", B / "lat", a.latency_count, 100, daemons),
        }
    ratios = {
        "through_vs_fifo": ratio(reps, "dnpfs.through", "fifo.through"),
        "write_vs_fifo": ratio(reps, "dnpfs.write", "fifo.through"),
        "read_vs_fifo": ratio(reps, "dnpfs.read", "fifo.through"),
        "write_vs_sqlite": ratio(reps, "dnpfs.write", "sqlite.write"),
        "read_vs_sqlite": ratio(reps, "dnpfs.read", "sqlite.read"),
        "sqlite_write_vs_fifo": ratio(reps, "sqlite.write", "fifo.through"),
        "write_vs_fuse": ratio(reps, "dnpfs.write", "fuse.write"),
        "read_vs_fuse": ratio(reps, "dnpfs.read", "fuse.read"),
        "small_vs_fuse": ratio(reps, "dnpfs.small", "fuse.small", "records_s"),
    }
    out = _scenario("Embedded store", {"bytes": size, "record": record, "reps": a.reps,
                                       "lines": n_lines, "line": line,
                                       "latency_messages": a.latency_count}, reps, ratios)
    out["latency"] = lat
    return out


SCENARIOS: dict[str, Callable[[Bench], dict]] = {
    "bulk": bulk_kafka,
    "small": small_writes,
    "latency": latency_kafka,
    "scaling": scaling,
    "embedded": embedded,
    "readers": readers_memory,
}
KAFKA_SCENARIOS = {"bulk", "small", "latency", "scaling", "readers"}

"""The bench rig: dnpfs daemons, timed child processes, what they cost, the broker.

Nothing here decides what to measure; the scenarios do.  Everything here is
plain blocking code (subprocess, /proc), so that the harness adds nothing to
the processes it measures but a few /proc reads between steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests import mount  # the tests' dnpfs daemon: the bench mounts the same way
from tests.util import proc_state, wait_for  # noqa: F401 (proc_state: for steps.py)

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # daemons and probes run under the suite's own interpreter
CLK_TCK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20
GiB = 1 << 30


def size_text(nbytes: int) -> str:
    """1 GiB, 64 MiB."""
    return f"{nbytes / GiB:g} GiB" if nbytes >= GiB else f"{nbytes / MiB:g} MiB"


class RigError(Exception):
    """The rig could not set something up (a mount, the broker, a tool)."""


# -- processes and what they cost -----------------------------------------------

def in_tree(argv: list[str], tree: Path) -> list[str]:
    """*argv* (``python -m dnpfs ...``, as a Mount's wrap gets it) run on
    another source tree's dnpfs (A/B runs).  ``-P``: Mount starts it in this
    checkout, which ``-m`` would put before PYTHONPATH: both sides would
    then run this tree."""
    return ["env", f"PYTHONPATH={tree}", argv[0], "-P", *argv[1:]]


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of *pid*, all threads (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_minor_faults(pid: int) -> int:
    """Minor page faults of *pid*, all threads (0 if it is gone): each is a
    page of fresh memory touched, a cost that grows with the bytes a daemon
    holds in flight rather than with the bytes it moves."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[7])


def peak_rss_mib(pid: int) -> float:
    """VmHWM of *pid*: its peak resident memory since start or reset_peak."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM (writing 5 to clear_refs), so a scenario sees its own peak."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores, from /proc/stat)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    ticks = [int(x) for x in parts]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / CLK_TCK


@dataclass
class Cost:
    """CPU seconds and peak memory of the processes a step involved."""

    daemon_cpu_s: float = 0.0  # dnpfs daemons (both mounts)
    daemon_peak_rss_mib: float = 0.0  # the larger of the daemons' VmHWM
    broker_cpu_s: float = 0.0
    # dd, cat, kcat, the aiokafka script ... (rusage).  Not their peak memory:
    # ru_maxrss of a forked child includes the harness's own pre-exec pages.
    client_cpu_s: float = 0.0
    machine_busy_s: float = 0.0  # every core, everything: is the box saturated?
    wall_s: float = 0.0  # how long the meter ran (the step may time a part of it)
    per_daemon_cpu_s: list[float] = field(default_factory=list)
    per_daemon_minor_faults: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: [round(x, 3) for x in v] if isinstance(v, list) else round(v, 3)
                for k, v in self.__dict__.items()}


class Meter:
    """CPU and peak-RSS deltas of the daemons and the broker over one step.

        with Meter(daemons, broker_pid) as m:
            ...
        m.cost.daemon_cpu_s
    """

    def __init__(self, daemons: list[int], broker: int | None) -> None:
        self.daemons = daemons
        self.broker = broker
        self.cost = Cost()

    def __enter__(self) -> Meter:
        for pid in self.daemons:
            reset_peak(pid)
        self._cpu0 = [proc_cpu_seconds(p) for p in self.daemons]
        self._faults0 = [proc_minor_faults(p) for p in self.daemons]
        self._broker0 = proc_cpu_seconds(self.broker) if self.broker else 0.0
        self._busy0 = machine_busy_seconds()
        self._wall0 = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        per = [proc_cpu_seconds(p) - c for p, c in zip(self.daemons, self._cpu0)]
        self.cost.per_daemon_cpu_s = per
        self.cost.per_daemon_minor_faults = [
            proc_minor_faults(p) - f for p, f in zip(self.daemons, self._faults0)]
        self.cost.daemon_cpu_s = sum(per)
        self.cost.daemon_peak_rss_mib = max((peak_rss_mib(p) for p in self.daemons), default=0.0)
        if self.broker:
            self.cost.broker_cpu_s = proc_cpu_seconds(self.broker) - self._broker0
        self.cost.machine_busy_s = machine_busy_seconds() - self._busy0
        self.cost.wall_s = time.monotonic() - self._wall0

    def add_client(self, usage: resource.struct_rusage | None) -> None:
        if usage is None:
            return
        self.cost.client_cpu_s += usage.ru_utime + usage.ru_stime


class Child:
    """A child process with a precise end time and its rusage.

    A reaper thread sits in os.wait4 from the start, so the end time does not
    depend on what the harness is doing when the process exits.  stdout goes
    to a pipe only when asked (``stdout=subprocess.PIPE``, to feed another
    process); otherwise to a temporary file, read by ``wait``.
    """

    def __init__(self, argv: list[str] | str, *, timeout: float, shell: bool = False,
                 cwd: Path | None = None, stdin=None, stdout=None) -> None:
        self.argv = argv
        self.timeout = timeout
        self._out = tempfile.TemporaryFile() if stdout is None else None
        self._err = tempfile.TemporaryFile()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, shell=shell, cwd=cwd, stdin=stdin,
            stdout=self._out if stdout is None else stdout, stderr=self._err,
            executable="/bin/bash" if shell else None)
        self.ended: float | None = None
        self.status: int | None = None
        self.usage: resource.struct_rusage | None = None
        self.out = b""
        self.err = b""
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.ended = time.monotonic()
        self.usage = usage
        self.status = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.status  # Popen must not wait for it again

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self._reaper.is_alive()

    def wait(self, check: bool = True) -> Child:
        """Wait for the end; raise RigError on a failure (with *check*) or a
        timeout (then the process is killed)."""
        self._reaper.join(max(0.0, self.started + self.timeout - time.monotonic()))
        if self._reaper.is_alive():
            self.kill()
            raise RigError(f"{self.name} did not finish within {self.timeout:.0f} s")
        for f, attr in ((self._out, "out"), (self._err, "err")):
            if f is not None:
                f.seek(0)
                setattr(self, attr, f.read())
                f.close()
        self._out = self._err = None
        if check and self.status != 0:
            raise RigError(f"{self.name} exited {self.status}:"
                           f" {self.err.decode(errors='replace').strip()[-600:]}")
        return self

    def kill(self) -> None:
        if self._reaper.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self._reaper.join(10)

    @property
    def seconds(self) -> float:
        assert self.ended is not None
        return self.ended - self.started

    @property
    def name(self) -> str:
        argv = self.argv if isinstance(self.argv, str) else " ".join(map(str, self.argv[:5]))
        return repr(argv[:90])


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    return wait_for(predicate, timeout, interval, what, error=RigError)


# -- dnpfs daemons -------------------------------------------------------------------

class Mount(mount.Mount):
    """`dnpfs mount` of one backend, daemonized as a user would run it
    (tests/mount.py), with the bench's patience and its RigError."""

    error = RigError
    ready_timeout = 60.0
    stop_timeout = 20.0


class NullMount(Mount):
    """benchmarks/nullfs.py: the same pyfuse3 and trio, storing nothing."""

    name = "nullfs"

    def __init__(self, path: Path, log: Path) -> None:
        super().__init__(path, [], log, foreground=True)  # nullfs never forks

    def argv(self) -> list[str]:
        return [PYTHON, "-m", "benchmarks.nullfs", str(self.path)]

    def _answers(self) -> bool:
        return True  # nothing to ask: mounted is ready


# -- the broker ------------------------------------------------------------------------

def check_loopback(bootstrap: str) -> None:
    """The bench only ever talks to a broker on this machine."""
    for server in bootstrap.split(","):
        host = server.strip().rpartition(":")[0].strip("[]")
        if host == "localhost":
            continue
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            pass
        raise RigError(f"refusing broker {server!r}: the bench runs against a loopback broker only")


def kafka_bootstrap() -> str:
    """DNPFS_KAFKA_BOOTSTRAP, or the dev broker (started if needed)."""
    addr = os.environ.get("DNPFS_KAFKA_BOOTSTRAP")
    if not addr:
        r = subprocess.run([str(ROOT / "scripts" / "kafka-dev"), "start"], cwd=ROOT,
                           capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        if r.returncode != 0 or not r.stdout.strip():
            raise RigError(f"scripts/kafka-dev start failed: {r.stderr.strip()[-500:]}")
        addr = r.stdout.strip().splitlines()[-1].strip()
    check_loopback(addr)
    return addr


def broker_pid() -> int | None:
    """The dev broker's JVM, for its CPU time (None for a broker we did not start)."""
    if os.environ.get("DNPFS_KAFKA_BOOTSTRAP"):
        return None
    state = Path(os.environ.get("DNPFS_KAFKA_STATE", "/tmp/dnpfs-kafka"))
    try:
        pid = int((state / "kafka.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def kafka_version(pid: int | None) -> str:
    """From the broker's class path (kafka-server-X.Y.Z.jar)."""
    if pid is None:
        return "unknown (external broker)"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "unknown"
    for i, arg in enumerate(cmdline):
        if arg in (b"-cp", b"-classpath") and i + 1 < len(cmdline):
            for entry in cmdline[i + 1].decode().split(":"):
                folder = Path(entry.rstrip("*"))  # libs/* or libs/some.jar
                folder = folder if folder.is_dir() else folder.parent
                for jar in sorted(folder.glob("kafka-server-*.jar")):
                    m = re.match(r"kafka-server-(\d[\w.\-]*)\.jar", jar.name)
                    if m:
                        return m.group(1)
    return "unknown"


class Admin:
    """Topics and consumer groups of the bench's own prefix, through aiokafka's
    admin client (the harness is not async; each call runs its own loop)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def _run(self, fn):
        async def go():
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="dnpfs-bench",
                                        request_timeout_ms=20_000)
            await admin.start()
            try:
                return await fn(admin)
            finally:
                await admin.close()

        return asyncio.run(go())

    def create(self, topics: list[str]) -> None:
        from aiokafka.admin import NewTopic

        async def create(admin):
            await admin.create_topics([NewTopic(t, 1, 1) for t in topics], timeout_ms=20_000)
            # wait until every topic has a leader, as dnpfs's mkfifo does
            deadline = time.monotonic() + 20
            client = admin._client
            while time.monotonic() < deadline:
                await client.force_metadata_update()
                md = client.cluster
                if all(md.leader_for_partition(_tp(t)) not in (None, -1) for t in topics):
                    return
                await asyncio.sleep(0.05)
            raise RigError(f"topics {topics[:3]}... got no leader")

        self._run(create)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every topic that starts with *prefix* (the bench's own)."""
        if not prefix or len(prefix) < 8:
            raise RigError(f"refusing to delete topics by the short prefix {prefix!r}")

        async def delete(admin):
            topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
            for at in range(0, len(topics), 100):
                await admin.delete_topics(topics[at:at + 100], timeout_ms=30_000)
            return len(topics)

        return self._run(delete)

    def groups_stable(self, group_ids: list[str]) -> bool:
        """Every group has a member that was assigned its partition."""
        async def describe(admin):
            # One group per request: aiokafka 0.14 fails to decode a DescribeGroups
            # answer about several groups from Kafka 4.1 ("Buffer underrun").
            for gid in group_ids:
                [response] = await admin.describe_consumer_groups([gid])
                [g] = response.to_object()["groups"]
                if g["state"] != "Stable" or not g["members"]:
                    return False
            return True

        return self._run(describe)

    def shares(self) -> bool:
        """Does the broker serve share groups as dnpfs speaks them?  Then a
        pipe's default group is a share group (as ``ShareReaders.supported``)."""
        from aiokafka.protocol.admin import ApiVersionRequest

        from dnpfs.backends.kafka._aiokafka import share_requests as rq

        async def ask(admin):
            client = admin._client
            response = await client.send(client.get_random_node(), ApiVersionRequest())
            return rq.supported({k: (lo, hi) for k, lo, hi, *_ in response.api_versions})

        return self._run(ask)

    def share_groups_assigned(self, group_ids: list[str]) -> bool:
        """Every share group has a member that was assigned its partition."""
        from .share_groups import ShareGroupDescribe, assigned

        async def describe(admin):
            for gid in group_ids:
                node = await admin.find_coordinator(gid)
                if not assigned(await admin._client.send(node, ShareGroupDescribe([gid]))):
                    return False
            return True

        return self._run(describe)


def _tp(topic: str):
    from aiokafka.structs import TopicPartition

    return TopicPartition(topic, 0)


def group_of(topic: str) -> str:
    """dnpfs's default reader group of a pipe's topic (docs/wire-format.md)
    where the broker has no share groups."""
    return f"dnpfs.{topic}"


def share_group_of(topic: str) -> str:
    """... and where it has them (docs/kafka.md, "Work queues")."""
    from dnpfs.backends.kafka._share import share_group_id

    return share_group_id(topic)


# -- the machine ----------------------------------------------------------------------

def _first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def _disk(path: Path) -> dict:
    """Device, filesystem and whether the kernel calls it rotational."""
    info = {"path": str(path)}
    r = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE", "-T", str(path)], capture_output=True,
                       text=True)
    if r.returncode == 0 and r.stdout.split():
        source, fstype = (r.stdout.split() + ["?"])[:2]
        info.update(device=source, fs=fstype)
        dev = Path(source).name
        base = re.sub(r"p?\d+$", "", dev) if not dev.startswith("vd") else re.sub(r"\d+$", "", dev)
        rota = Path(f"/sys/block/{base}/queue/rotational")
        if rota.exists():
            info["rotational"] = rota.read_text().strip() == "1"
        size = Path(f"/sys/block/{base}/size")
        if size.exists():
            info["size_gib"] = round(int(size.read_text()) * 512 / GiB)
    usage = shutil.disk_usage(path)
    info["free_gib"] = round(usage.free / GiB, 1)
    return info


def machine(bench_dir: Path, broker: int | None) -> dict:
    import importlib.metadata as md

    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("pyfuse3", "trio", "aiokafka"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "missing"
    kcat = _first_line(["kcat", "-V"]) if shutil.which("kcat") else "missing"
    kcat_full = subprocess.run(["kcat", "-V"], capture_output=True, text=True).stdout \
        if shutil.which("kcat") else ""
    m = re.search(r"Version (\S+).*?librdkafka (\S+)", kcat_full, re.S)
    state = Path(os.environ.get("DNPFS_KAFKA_STATE", "/tmp/dnpfs-kafka"))
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "packages": versions,
        "kafka": kafka_version(broker),
        "kcat": f"{m.group(1)} (librdkafka {m.group(2)})" if m else kcat,
        "disk_bench": _disk(bench_dir),
        "disk_broker": _disk(state / "data") if (state / "data").exists() else None,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }

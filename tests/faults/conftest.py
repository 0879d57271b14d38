"""Fixtures of the fault tests: a broker of our own, mounts per backend, and
the collector that turns every test's measured outcome into a row of
docs/reliability.md.

- ``fault_broker`` (session): a Kafka broker started with scripts/kafka-dev
  under its own state folder and ports, so that tests may SIGSTOP it without
  touching the shared dev broker (127.0.0.1:39092) that others use.  Stopped
  and removed at the end of the session; leftovers of a killed session are
  removed by the next one.
- ``backend_args`` (parametrized sqlite/kafka, narrowed by DNPFS_TEST_BACKENDS).
- ``reliability``: ``reliability.row(fault=..., expected=...)`` and
  ``reliability.measure(key=value, ...)``.  At the end of the session the
  rows, with each test's outcome, are merged into bench-results/reliability.json
  (DNPFS_RELIABILITY_JSON); ``scripts/reliability-report`` renders the table.

DNPFS_LONG=1 selects the long variants (durations, sizes, examples).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..conftest import DNPFS, ROOT, Mount
from ..util import wait_for

LONG = os.environ.get("DNPFS_LONG") == "1"
BACKENDS = [b for b in os.environ.get("DNPFS_TEST_BACKENDS", "sqlite,kafka").split(",") if b]
RESULTS = Path(os.environ.get("DNPFS_RELIABILITY_JSON") or ROOT / "bench-results" / "reliability.json")
# The broker's log lives in memory (tmpfs) unless DNPFS_FAULTS_BROKER_DIR says
# otherwise.  On this machine's ext4 the first write to each of the broker's
# preallocated, memory-mapped index files is a page fault of 2-15 ms; with
# 200 pipes those 400 faults stalled the broker's two request threads for 5-7
# s once per run, ~4.5 s after the load began (docs/reliability.md, item 6).
# That measures the disk, not dnpfs; DNPFS_FAULTS_BROKER_DIR=/tmp shows it.
BROKER_DIR = Path(os.environ.get("DNPFS_FAULTS_BROKER_DIR")
                  or ("/dev/shm" if os.access("/dev/shm", os.W_OK) else "/tmp"))
STATE_PREFIX = f"{BROKER_DIR}/dnpfs-faults-kafka-"
KAFKA_DEV = ROOT / "scripts" / "kafka-dev"


def long_or(short, long):
    return long if LONG else short


# --------------------------------------------------------------------------- our broker

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _kafka_dev(env: dict, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(KAFKA_DEV), *args], cwd=ROOT, env={**os.environ, **env},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def _broker_pid(state: Path) -> int | None:
    """The pid in *state*/kafka.pid if that process is the broker of *state*."""
    try:
        pid = int((state / "kafka.pid").read_text().split()[0])
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(state / "server.properties").encode() in argv else None


def _reap_leftovers() -> None:
    """Brokers of fault-test sessions that were killed: continue, stop, remove."""
    for state in BROKER_DIR.glob("dnpfs-faults-kafka-*"):
        try:
            owner = int(state.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if _pid_alive(owner):
            continue
        pid = _broker_pid(state)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
            _kafka_dev({"DNPFS_KAFKA_STATE": str(state)}, "stop")
        shutil.rmtree(state, ignore_errors=True)


@dataclass
class FaultBroker:
    """A broker only the fault tests use: SIGSTOP/SIGCONT are ours to send."""

    state: Path
    bootstrap: str  # PLAINTEXT on 127.0.0.1
    hosts_addr: str | None  # the HOSTS listener on 10.213.0.1, for tests/hosts.py
    pid: int
    stopped: bool = False
    env: dict = field(default_factory=dict)  # scripts/kafka-dev's settings for this broker

    def kill(self) -> None:
        """kill -9: the broker process dies, its files stay (page cache included)."""
        assert _broker_pid(self.state) == self.pid, "not our broker"
        proc = Path(f"/proc/{self.pid}")
        self._argv = proc.joinpath("cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        self._environ = dict(kv.split(b"=", 1) for kv in
                             proc.joinpath("environ").read_bytes().split(b"\0") if b"=" in kv)
        self._cwd = os.readlink(proc / "cwd")
        os.kill(self.pid, signal.SIGKILL)
        wait_for(lambda: not _pid_alive(self.pid), 30, what="the killed broker to go")

    def start_again(self, timeout: float = 120) -> None:
        """The killed broker's command again, on its data (`kafka-dev start`
        would format fresh data); ready once its port accepts connections."""
        # Through a shell that exits at once, as kafka-dev does: the broker is
        # then no child of the tests (kafka-dev stop would wait on a zombie).
        out = self.state / "kafka.out"
        r = subprocess.run(["setsid", "sh", "-c", f'"$@" </dev/null >>"{out}" 2>&1 & echo $!',
                            "sh", *self._argv], env=self._environ, cwd=self._cwd,
                           stdout=subprocess.PIPE, check=True)
        self.pid = int(r.stdout.split()[-1])
        (self.state / "kafka.pid").write_text(f"{self.pid}\n")
        host, _, port = self.bootstrap.rpartition(":")

        def accepts() -> bool:
            try:
                socket.create_connection((host, int(port)), 1).close()
                return True
            except OSError:
                return False

        wait_for(accepts, timeout, interval=0.2, what="the broker to start again")

    def freeze(self) -> None:
        assert _broker_pid(self.state) == self.pid, "not our broker"
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True

    def thaw(self) -> None:
        if self.stopped:
            os.kill(self.pid, signal.SIGCONT)
            self.stopped = False


@pytest.fixture(scope="session")
def fault_broker(request, tmp_path_factory):
    if "kafka" not in BACKENDS:
        pytest.skip("kafka is not in DNPFS_TEST_BACKENDS")
    if os.geteuid() != 0:
        pytest.skip("the fault tests' broker and hosts need root")
    _reap_leftovers()
    state = Path(f"{STATE_PREFIX}{os.getpid()}")
    env = {"DNPFS_KAFKA_STATE": str(state)}
    for var in ("DNPFS_KAFKA_PORT", "DNPFS_KAFKA_CONTROLLER_PORT", "DNPFS_KAFKA_SASL_PORT",
                "DNPFS_KAFKA_SSL_PORT", "DNPFS_KAFKA_HOSTS_PORT", "DNPFS_KAFKA_SASL_SSL_PORT"):
        port = _free_port()
        while str(port) in env.values():
            port = _free_port()
        env[var] = str(port)
    r = _kafka_dev(env, "start", timeout=900)
    if r.returncode != 0 or not r.stdout.strip():
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"starting the fault tests' broker failed:\n{r.stderr}{r.stdout}",
                    pytrace=False)
    if "starting it once more" in r.stderr:
        warnings.warn(f"the fault tests' broker needed a second start:\n{r.stderr}")
    bootstrap = r.stdout.strip().splitlines()[-1]
    hosts = _kafka_dev(env, "address", "hosts")
    broker = FaultBroker(state, bootstrap, hosts.stdout.strip() if hosts.returncode == 0 else None,
                         _broker_pid(state), env=env)
    try:
        yield broker
    finally:
        broker.thaw()
        _kafka_dev(env, "stop")
        if request.session.testsfailed:
            _keep_logs(state, tmp_path_factory.getbasetemp() / "fault-broker")
        shutil.rmtree(state, ignore_errors=True)


def _keep_logs(state: Path, to: Path) -> None:
    """The broker's logs, kept with the tests' temporary files when a test
    failed: whether the broker answered is often the question."""
    to.mkdir(parents=True, exist_ok=True)
    for log in [state / "kafka.out", *sorted((state / "logs").glob("*.log*"))]:
        if log.is_file():
            shutil.copy2(log, to / log.name)
    print(f"\nthe fault broker's logs: {to}")


@pytest.fixture
def thawed(fault_broker):
    """Whatever a test does to the broker, it runs again afterwards."""
    yield fault_broker
    fault_broker.thaw()


def kafka_args(bootstrap: str) -> list[str]:
    return ["--kafka", bootstrap, "--topic-prefix", f"f{uuid.uuid4().hex[:8]}."]


@pytest.fixture(params=BACKENDS)
def backend_args(request, tmp_path):
    """Two daemons given these arguments share one store (or one cluster)."""
    request.node.backend = request.param
    if request.param == "sqlite":
        return ["--store", str(tmp_path / "store" / "dnpfs.sqlite")]
    return kafka_args(request.getfixturevalue("fault_broker").bootstrap)


@pytest.fixture
def backend(request, backend_args):
    return request.node.backend


def make_plain_mount(tmp_path: Path, name: str, backend_args, extra=(), wrap=None,
                     foreground: bool = False) -> Mount:
    return Mount.under(tmp_path, name, backend_args, extra, wrap, foreground)


# --------------------------------------------------------------------------- daemon probes

def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process, plus its open fds."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


def mount_status(m: Mount, timeout: float = 10) -> dict:
    """The root's user.dnpfs.status (JSON), read in a child so a hung daemon
    cannot hang the test."""
    code = ("import json, os, sys; "
            "print(os.getxattr(sys.argv[1], 'user.dnpfs.status').decode())")
    r = subprocess.run([sys.executable, "-c", code, str(m.path)], capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"status of {m.path}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def answers(m: Mount, timeout: float = 10) -> bool:
    """The daemon is alive and a fresh pipe round-trips through it."""
    if m.proc is None or m.proc.poll() is not None:
        return False
    name = f"alive{uuid.uuid4().hex[:6]}"
    script = (f"import os; p=os.path.join({str(m.path)!r}, {name!r}); os.mkfifo(p); "
              "f=open(p,'wb',buffering=0); f.write(b'ping'); f.close(); "
              "fd=os.open(p, os.O_RDONLY); d=os.read(fd, 10); os.close(fd); os.unlink(p); "
              "assert d == b'ping', d")
    try:
        r = subprocess.run([sys.executable, "-c", script], capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


# --------------------------------------------------------------------------- the table

_ROWS: dict[str, dict] = {}


class Reliability:
    """One test's row: what is done to dnpfs, what should happen, what did."""

    def __init__(self, nodeid: str, name: str) -> None:
        self.data = _ROWS.setdefault(nodeid, {"test": name, "measured": {}})

    def row(self, fault: str, expected: str) -> None:
        self.data["fault"] = fault
        self.data["expected"] = expected

    def measure(self, **values) -> None:
        self.data["measured"].update(values)

    def note(self, text: str) -> None:
        self.data.setdefault("notes", []).append(text)


@pytest.fixture
def reliability(request) -> Reliability:
    return Reliability(request.node.nodeid, request.node.name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    row = _ROWS.get(item.nodeid)
    if row is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            row["result"] = "xfail" if report.skipped else "XPASS"
        else:
            row["result"] = {"passed": "pass", "failed": "FAIL", "skipped": "skip"}[report.outcome]
        if report.when == "call":
            row["seconds"] = round(report.duration, 1)
        if hasattr(report, "wasxfail"):
            row["xfail_reason"] = report.wasxfail
    elif report.when == "teardown" and report.outcome == "failed" and row.get("result") == "pass":
        row["result"] = "FAIL (teardown)"


def pytest_sessionfinish(session, exitstatus):
    if not _ROWS:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        old = {}
    rows = old.get("rows", {})
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    for nodeid, row in _ROWS.items():
        if "result" not in row:
            continue  # never ran to a verdict (deselected, interrupted)
        rows[nodeid] = {**row, "variant": "long" if LONG else "short", "when": now}
    RESULTS.write_text(json.dumps({"rows": rows}, indent=1, sort_keys=True) + "\n")

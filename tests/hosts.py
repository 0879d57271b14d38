"""Several "hosts" on one machine: Linux network namespaces on a private bridge.

    from tests.hosts import Hosts

    with Hosts(["h1", "h2"], reach=broker) as hosts:   # or Hosts(2) -> h1, h2
        hosts.run("h1", ["kcat", "-b", broker, "-L"])        # CompletedProcess
        p = hosts.popen("h2", [sys.executable, "-m", "dnpfs", "mount", ...])
        hosts.cut("h1")                           # unplug h1's cable
        hosts.heal("h1")                          # plug it back in

Layout of one `Hosts` (index n, 1..254, unique among running `Hosts`):

    root namespace: bridge dnpfs-b<n>, 10.213.n.1/24 ("gateway")
        veth dnpfs-v<n>x<i> (port of the bridge)  <->  eth0 in namespace i
    namespace dnpfs-<n>-<name> (/run/netns/...): lo, eth0 = 10.213.n.(10+i)/24,
        and one route: 10.213.0.0/24 via 10.213.n.1

The hosts of one `Hosts` reach each other over the bridge.  Through the gateway
they reach only 10.213.0.0/24: the address 10.213.0.1 of the bridge dnpfs-br0 that
`scripts/kafka-dev start` creates, where the dev broker has its HOSTS listener
(`scripts/kafka-dev address hosts`).  There is no default route, so a host can
never reach anything but our own test addresses; IP forwarding is not needed
(10.213.0.1 is a local address of the root namespace).

Commands run with only the network namespace switched (`nsenter --net=...`, not
`ip netns exec`, which also unshares the mount namespace): a FUSE mount or file
made by a process in a host is visible to the test and to the other hosts.

`Hosts(..., reach="ADDR:PORT")` returns only once every host has made a TCP
connection to ADDR:PORT from inside its namespace (attempts of at most 1 s, for
at most `reach_timeout` s; else HostsError naming the host, the address and the
last error).  A daemon started in a host right away then never meets a path that
is not there yet, and a path that never comes is told as such, not as the
daemon's failure to reach its broker.  A host that needs more than one attempt
is reported with a warning, so that a slow path shows in the test summary.  The
bridge has STP off, so its ports forward as soon as their veth has carrier (no
listening/learning delay).

`cut(host)` sets the root-side veth down (the host's eth0 loses carrier; packets
are dropped, connections time out); `heal(host)` sets it up again.

Cleanup (`close()`, the context manager, or at interpreter exit) deletes the
namespaces, veths and bridge even after a failure.  If a test process is killed,
its leftovers are removed by the next `Hosts` that finds their owner dead
(/run/dnpfs-hosts/<n> holds the owner's pid and start time).  Needs root
(CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` (iproute2) and `nsenter` (util-linux).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

SUBNET_PREFIX = "10.213"         # our private test range; .0.0/24 is the broker's bridge
BROKER_NET = f"{SUBNET_PREFIX}.0.0/24"
RUN_DIR = Path("/run/dnpfs-hosts")
NETNS_DIR = Path("/run/netns")
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")

# Run in a host: TCP connects to argv[1] (host:port) until one succeeds or
# argv[2] seconds have passed; prints "SECONDS ATTEMPTS ERROR": the first
# error on success, the last one on failure (exit 1).
# One attempt waits at most 1 s: a SYN lost to a path not ready yet is retried
# then, as the kernel would, but without its doubling backoff (1, 3, 7, 15 s).
_REACH = """
import socket, sys, time
host, _, port = sys.argv[1].rpartition(":")
t0 = time.monotonic(); deadline = t0 + float(sys.argv[2])
attempts, first, last = 0, "", ""
while True:
    attempts += 1
    try:
        socket.create_connection((host, int(port)),
                                 timeout=max(0.05, min(1.0, deadline - time.monotonic()))).close()
        print(f"{time.monotonic() - t0:.3f} {attempts} {first}")
        sys.exit(0)
    except OSError as e:
        last = str(e) if isinstance(e, TimeoutError) else (e.strerror or str(e))
        first = first or last
    if time.monotonic() >= deadline:
        print(f"{time.monotonic() - t0:.3f} {attempts} {last}")
        sys.exit(1)
    time.sleep(0.1)
"""


class HostsError(RuntimeError):
    pass


def _ip(*args, check=True):
    r = subprocess.run(["ip", *args], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30)
    if check and r.returncode != 0:
        raise HostsError(f"ip {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(owner_file: Path) -> bool:
    try:
        pid, start = owner_file.read_text().split()
        return _proc_start_time(int(pid)) == start
    except (OSError, ValueError):
        return False


def _remove_index(n: int) -> None:
    """Delete everything that index n may have created (idempotent)."""
    for ns in NETNS_DIR.glob(f"dnpfs-{n}-*"):
        _ip("netns", "delete", ns.name, check=False)   # also deletes the veth pairs
    links = _ip("-o", "link", "show", check=False).stdout
    for name in re.findall(rf"^\d+: (dnpfs-v{n}x\d+)[@:]", links, re.M):
        _ip("link", "delete", name, check=False)
    _ip("link", "delete", f"dnpfs-b{n}", check=False)


class Hosts:
    """N network namespaces ("hosts") on a private bridge; see the module doc."""

    def __init__(self, hosts: int | list[str] = 2, *, reach: str | None = None,
                 reach_timeout: float = 30.0):
        if os.geteuid() != 0:
            raise HostsError(
                "tests/hosts.py needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create "
                f"network namespaces and bridges; running as uid {os.geteuid()}")
        for tool in ("ip", "nsenter"):
            if not shutil.which(tool):
                raise HostsError(f"tests/hosts.py needs `{tool}` "
                                 "(apt-get install iproute2 util-linux)")
        names = [f"h{i}" for i in range(1, hosts + 1)] if isinstance(hosts, int) else list(hosts)
        if not names or len(names) > 200 or len(set(names)) != len(names):
            raise HostsError(f"bad host names {names!r}")
        for name in names:
            if not NAME_RE.match(name):
                raise HostsError(f"bad host name {name!r} (want {NAME_RE.pattern})")
        self.names = names
        self.n: int | None = None
        self._closed = False
        self.reached: dict[str, float] = {}   # host -> seconds its first connection took
        self._claim()
        try:
            self._create()
            if reach is not None:
                self.wait_reach(reach, reach_timeout)
        except BaseException:
            self.close()
            raise
        atexit.register(self.close)

    # ------------------------------------------------------------------ names
    @property
    def bridge(self) -> str:
        return f"dnpfs-b{self.n}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on this Hosts' bridge."""
        return f"{SUBNET_PREFIX}.{self.n}.1"

    def _index(self, host: str) -> int:
        try:
            return self.names.index(host) + 1
        except ValueError:
            raise HostsError(f"no host {host!r}; hosts are {self.names}") from None

    def netns(self, host: str) -> str:
        """The namespace name (under /run/netns)."""
        self._index(host)
        return f"dnpfs-{self.n}-{host}"

    def netns_path(self, host: str) -> str:
        return str(NETNS_DIR / self.netns(host))

    def veth(self, host: str) -> str:
        """The root-side end of the host's cable (a port of the bridge)."""
        return f"dnpfs-v{self.n}x{self._index(host)}"

    def addr(self, host: str) -> str:
        """The host's IPv4 address."""
        return f"{SUBNET_PREFIX}.{self.n}.{10 + self._index(host)}"

    # ------------------------------------------------------------------ setup
    def _claim(self) -> None:
        """Pick a free index n under a lock; reclaim those of dead owners."""
        RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        me = f"{os.getpid()} {_proc_start_time(os.getpid())}\n"
        with open(RUN_DIR / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            addrs = _ip("-o", "-4", "addr", "show").stdout
            links = _ip("-o", "link", "show").stdout
            for n in range(1, 255):
                owner = RUN_DIR / str(n)
                if owner.exists():
                    if _owner_alive(owner):
                        continue
                    _remove_index(n)         # leftovers of a killed test run
                    owner.unlink(missing_ok=True)
                    links = _ip("-o", "link", "show").stdout
                    addrs = _ip("-o", "-4", "addr", "show").stdout
                if (f" {SUBNET_PREFIX}.{n}." in addrs or f": dnpfs-b{n}:" in links
                        or any(NETNS_DIR.glob(f"dnpfs-{n}-*"))):
                    continue                 # in use by something we do not own
                owner.write_text(me)
                self.n = n
                return
        raise HostsError(f"no free {SUBNET_PREFIX}.N.0/24 subnet for tests/hosts.py "
                         f"(see {RUN_DIR})")

    def _create(self) -> None:
        br = self.bridge
        _ip("link", "add", br, "type", "bridge", "stp_state", "0")
        _ip("addr", "add", f"{self.gateway}/24", "dev", br)
        _ip("link", "set", br, "up")
        for host in self.names:
            ns, veth = self.netns(host), self.veth(host)
            _ip("netns", "add", ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", br)
            _ip("link", "set", veth, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", BROKER_NET, "via", self.gateway)

    def wait_reach(self, target: str, timeout: float = 30.0) -> None:
        """Return once every host has connected over TCP to target (host:port),
        from inside its namespace; HostsError naming the host if one has not
        within timeout.  The hosts try at once, each in its own process."""
        probes = {h: self.popen(h, [sys.executable, "-c", _REACH, target, str(timeout)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
                  for h in self.names}
        failed = []
        try:
            outs = {h: p.communicate(timeout=timeout + 30)[0] for h, p in probes.items()}
        finally:
            for p in probes.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for host, p in probes.items():
            out = outs[host]
            m = re.fullmatch(r"([\d.]+) (\d+) ?(.*)", (out or "").strip(), re.S)
            if p.returncode != 0 or not m:
                why = (f"{m[3]} (after {m[1]} s, {m[2]} attempts)" if m
                       else f"probe exited {p.returncode}: {(out or '').strip()[-500:]}")
                failed.append(f"host {host} ({self.addr(host)}) cannot reach {target}: {why}")
                continue
            self.reached[host] = float(m[1])
            if m[2] != "1":
                warnings.warn(f"tests/hosts.py: host {host} ({self.addr(host)}) reached "
                              f"{target} only after {m[1]} s, {m[2]} attempts "
                              f"(first: {m[3]})", stacklevel=2)
        if failed:
            raise HostsError(f"within {timeout:g} s: " + "; ".join(failed))

    # ------------------------------------------------------------------ use
    def cmd(self, host: str, cmd) -> list[str]:
        """argv that runs cmd (a list, or a str for sh -c) in host's network
        namespace only; nsenter execs cmd, so the Popen pid is cmd's pid."""
        if isinstance(cmd, str):
            cmd = ["sh", "-c", cmd]
        return ["nsenter", f"--net={self.netns_path(host)}", "--", *map(str, cmd)]

    def run(self, host: str, cmd, *, timeout: float = 30, check: bool = False,
            **kw) -> subprocess.CompletedProcess:
        """subprocess.run in host; captures text output unless told otherwise."""
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("text", True)
        return subprocess.run(self.cmd(host, cmd), timeout=timeout, check=check, **kw)

    def popen(self, host: str, cmd, **kw) -> subprocess.Popen:
        """subprocess.Popen in host (same keyword arguments)."""
        return subprocess.Popen(self.cmd(host, cmd), **kw)

    def cut(self, host: str) -> None:
        """Network split: host's cable is unplugged (its veth set down)."""
        _ip("link", "set", self.veth(host), "down")

    def heal(self, host: str) -> None:
        _ip("link", "set", self.veth(host), "up")

    # ------------------------------------------------------------------ cleanup
    def close(self) -> None:
        if self._closed or self.n is None:
            return
        self._closed = True
        try:
            _remove_index(self.n)
        finally:
            (RUN_DIR / str(self.n)).unlink(missing_ok=True)
            atexit.unregister(self.close)

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        hosts = ", ".join(f"{h}={self.addr(h)}" for h in self.names) if self.n else ""
        return f"Hosts(n={self.n}, bridge={self.bridge}, {hosts})"

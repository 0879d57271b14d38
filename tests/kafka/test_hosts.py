"""Two "hosts" (network namespaces, tests/hosts.py) talking to the dev broker.

The broker started by scripts/kafka-dev has a HOSTS listener on 10.213.0.1 (the
bridge dnpfs-br0 that `scripts/kafka-dev start` creates as root); each host
reaches it through its own veth, its Hosts bridge and the root namespace.  kcat
runs inside the hosts; `cut` unplugs a host's cable and `heal` plugs it back.
Commands switch only the network namespace, so files and mounts made inside a
host are visible to the test.  Needs root.
"""

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.hosts import NETNS_DIR, RUN_DIR, Hosts, HostsError
from tests.kafka.admin import create_topic_at, run
from tests.util import mounted

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(os.geteuid() != 0, reason="tests/hosts.py needs root"),
]

ROOT = Path(__file__).resolve().parents[2]
KAFKA_DEV = ROOT / "scripts" / "kafka-dev"


def kafka_dev(*args):
    return subprocess.run([str(KAFKA_DEV), *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def broker(kafka_bootstrap):
    """The broker's HOSTS listener, host:port (10.213.0.1:39096 by default)."""
    r = kafka_dev("address", "hosts")
    if r.returncode != 0:
        if os.environ.get("DNPFS_KAFKA_BOOTSTRAP"):
            pytest.skip("DNPFS_KAFKA_BOOTSTRAP points at another broker; the HOSTS "
                        "listener is that of scripts/kafka-dev")
        pytest.fail(f"scripts/kafka-dev address hosts failed:\n{r.stderr}", pytrace=False)
    return r.stdout.strip()


@pytest.fixture(scope="module")
def hosts():
    with Hosts(["h1", "h2"]) as h:
        yield h


def kcat_metadata(hosts, host, broker, wait=3):
    return hosts.run(host, ["kcat", "-b", broker, "-L", "-m", str(wait)], timeout=wait + 20)


def test_layout(hosts):
    a1, a2 = hosts.addr("h1"), hosts.addr("h2")
    assert a1 != a2 and a1.startswith("10.213.") and a2.startswith("10.213.")
    assert not a1.startswith("10.213.0.")
    for h in hosts.names:
        assert Path(hosts.netns_path(h)).exists()
        addrs = hosts.run(h, ["ip", "-o", "-4", "addr", "show"], check=True).stdout
        assert f" {hosts.addr(h)}/24 " in addrs
        routes = hosts.run(h, ["ip", "route", "show"], check=True).stdout
        assert "default" not in routes                    # only our test subnets
        assert f"10.213.0.0/24 via {hosts.gateway}" in routes
    # The two hosts reach each other directly over their bridge.
    server = hosts.popen("h2", [sys.executable, "-c", textwrap.dedent(f"""
        import socket
        s = socket.socket(); s.bind(("{a2}", 39111)); s.listen(); print("up", flush=True)
        c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "up"
        got = hosts.run("h1", [sys.executable, "-c",
                               f"import socket; print(socket.create_connection(('{a2}', 39111),"
                               " timeout=5).recv(64).decode())"], check=True).stdout
        assert got.strip() == a1
    finally:
        server.kill()
        server.wait()


def test_kcat_metadata_from_each_host(hosts, broker):
    for h in hosts.names:
        r = kcat_metadata(hosts, h, broker, wait=10)
        assert r.returncode == 0, f"{h}: {r.stderr}"
        assert f"broker 1 at {broker}" in r.stdout, r.stdout


def test_produce_in_h1_consume_in_h2(hosts, broker, kafka_bootstrap):
    topic = f"dnpfs-test-hosts-{uuid.uuid4().hex[:10]}"
    run(create_topic_at(kafka_bootstrap, topic))
    value = f"from h1 {uuid.uuid4().hex}"
    p = hosts.run("h1", ["kcat", "-b", broker, "-P", "-t", topic, "-p", "0", "-m", "10"],
                  input=value + "\n")
    assert p.returncode == 0, p.stderr
    c = hosts.run("h2", ["kcat", "-b", broker, "-C", "-t", topic, "-p", "0", "-o",
                         "beginning", "-e", "-q", "-m", "10", "-f", "%s\n"])
    assert c.returncode == 0, c.stderr
    assert c.stdout.splitlines() == [value]


def test_cut_and_heal(hosts, broker):
    hosts.cut("h1")
    try:
        t0 = time.monotonic()
        r = kcat_metadata(hosts, "h1", broker, wait=3)
        assert r.returncode != 0, f"h1 reached the broker while cut:\n{r.stdout}"
        assert "Failed to acquire metadata" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 15
        # The other host is not affected.
        r2 = kcat_metadata(hosts, "h2", broker, wait=10)
        assert r2.returncode == 0, r2.stderr
    finally:
        hosts.heal("h1")
    r = kcat_metadata(hosts, "h1", broker, wait=10)
    assert r.returncode == 0, f"h1 after heal: {r.stderr}"


def test_popen_shares_mount_namespace(hosts, tmp_path):
    """Only the network namespace is switched: a file and a mount made by a
    process inside host h1 are visible to the test (as a FUSE mount would be)."""
    f, mnt = tmp_path / "made-in-h1", tmp_path / "mnt"
    mnt.mkdir()
    p = hosts.popen("h1", f"touch {f} && mount -t tmpfs dnpfs-hosts-test {mnt} "
                          f"&& echo hello > {mnt}/x && exec sleep 60",
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not (mnt / "x").exists():
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline, "h1 did not make the mount"
            time.sleep(0.02)
        assert f.exists()
        assert mounted(mnt)
        assert (mnt / "x").read_text() == "hello\n"
        # p is the command itself (nsenter execs), in h1's network namespace
        # and in our mount namespace.
        assert os.stat(f"/proc/{p.pid}/ns/net").st_ino == os.stat(hosts.netns_path("h1")).st_ino
        assert os.stat(f"/proc/{p.pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        assert os.stat(f"/proc/{p.pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino
    finally:
        p.kill()
        p.wait()
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _links():
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True,
                          text=True).stdout


def test_unique_names_and_cleanup(hosts):
    with Hosts(1) as a, Hosts(["x"]) as b:
        assert len({hosts.n, a.n, b.n}) == 3
        assert len({hosts.addr("h1"), a.addr("h1"), b.addr("x")}) == 3
        made = [(a, "h1"), (b, "x")]
        for h, name in made:
            assert f": {h.bridge}:" in _links()
            assert h.run(name, ["true"]).returncode == 0
    links = _links()
    for h, name in made:
        assert not Path(h.netns_path(name)).exists()
        assert f": {h.bridge}:" not in links
        assert f": {h.veth(name)}@" not in links
        assert not (RUN_DIR / str(h.n)).exists()
    # The module's hosts are untouched.
    assert all(Path(hosts.netns_path(h)).exists() for h in hosts.names)


def test_leftovers_of_a_killed_run_are_reclaimed(hosts):
    code = ("import os, signal; from tests.hosts import Hosts; h = Hosts(1); "
            "print(h.n, os.getpid(), flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    n, dead_pid = r.stdout.split()
    n = int(n)
    leftover = NETNS_DIR / f"dnpfs-{n}-h1"
    owner = RUN_DIR / str(n)
    assert leftover.exists() and f": dnpfs-b{n}:" in _links()
    # The next Hosts sees the dead owner, removes its leftovers and reuses n
    # (unless a concurrent test run reclaimed it first).
    with Hosts(1) as h:
        assert h.run("h1", ["true"]).returncode == 0
        if h.n != n:
            assert owner.exists() and owner.read_text().split()[0] != dead_pid
    if h.n == n:
        assert not leftover.exists() and f": dnpfs-b{n}:" not in _links()


def test_not_root_is_a_clear_error():
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip("no /usr/bin/python3 to run as nobody")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        python, "-c", "from tests.hosts import Hosts; Hosts(1)"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "HostsError" in r.stderr and "needs root" in r.stderr, r.stderr


def test_unknown_host_is_a_clear_error(hosts):
    with pytest.raises(HostsError, match="no host 'h9'"):
        hosts.run("h9", ["true"])


def _mine() -> set[int]:
    """Indices of Hosts that this test process owns."""
    return {int(f.name) for f in RUN_DIR.glob("[0-9]*")
            if f.read_text().split()[:1] == [str(os.getpid())]}


def test_reach_waits_for_a_path_that_is_not_there_yet(broker):
    """A host whose cable is still unplugged reaches the broker once it is
    plugged in: wait_reach retries the lost connects instead of failing."""
    with Hosts(1) as h:
        h.cut("h1")
        plug_in = threading.Timer(2.5, h.heal, ["h1"])
        plug_in.start()
        try:
            with pytest.warns(UserWarning, match=r"host h1 .* reached .* only after"):
                h.wait_reach(broker, timeout=20)
        finally:
            plug_in.cancel()
            plug_in.join()
        assert 2.3 < h.reached["h1"] < 10, h.reached


def test_reach_is_at_once_on_a_fresh_host(broker):
    with Hosts(["a", "b", "c"], reach=broker) as h:
        assert set(h.reached) == {"a", "b", "c"}
        assert max(h.reached.values()) < 1, h.reached


def test_reach_that_never_comes_is_a_clear_error(hosts):
    with socket.socket() as s:       # a port of 10.213.0.1 where nothing listens
        s.bind(("10.213.0.1", 0))
        target = f"10.213.0.1:{s.getsockname()[1]}"
    before = _mine()
    t0 = time.monotonic()
    with pytest.raises(HostsError) as e:
        Hosts(["x", "y"], reach=target, reach_timeout=1.5)
    assert time.monotonic() - t0 < 10
    for name, last in (("x", 11), ("y", 12)):
        assert re.search(rf"host {name} \(10\.213\.\d+\.{last}\) cannot reach {target}:"
                         r" Connection refused \(after [\d.]+ s, \d+ attempts\)", str(e.value)), e.value
    assert _mine() == before             # nothing of the failed Hosts is left

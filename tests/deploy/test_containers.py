"""The image run as containers (podman with runc), the way docs/deploy.md and
deploy/docker-compose.yml say: every container binds the host directory
/mnt/dnpfs (here a test directory), dnpfs with rshared propagation, mounting
the pipes on /mnt/dnpfs/pipes below it, the applications with rslave,
read-only.  What the host and the applications see when dnpfs is stopped, and
killed, and how they recover.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from ..util import proc_state, wait_for
from .conftest import ensure_debs, sh
from .containers import FUSE, Engine, SharedDir, busybox_image, fuse_mounts_on, podman
from .image import BASE

pytestmark = pytest.mark.deploy_image

# debian:bookworm-slim for the application containers: the debootstrap base
# the image is built on stands in for it.
APP = BASE
LINES = 2000


@pytest.fixture
def engine():
    ensure_debs("podman", "runc")
    e = Engine()
    yield e
    e.close()


@pytest.fixture
def shared(tmp_path):
    d = SharedDir(tmp_path / "dnpfs")
    yield d
    d.close()


def start_dnpfs(engine: Engine, image, shared: SharedDir, store: str, what: str = "dnpfs",
                wait: bool = True) -> str:
    """The Dockerfile's `docker run` line."""
    name = engine.run(what, image.name, options=[
        *FUSE, "-v", f"{shared.path}:/mnt/dnpfs:rshared", "-e", "DNPFS_MOUNTPOINT=/mnt/dnpfs/pipes",
        "-v", f"{store}:/var/lib/dnpfs"])
    if wait:
        engine.wait_healthy(name)
    return name


def start_app(engine: Engine, shared: SharedDir, what: str, script: str, image: str = APP) -> str:
    return engine.run(what, image, "sh", "-c", script,
                      options=["-v", f"{shared.path}:/mnt/dnpfs:rslave,ro"])


def wait_log(engine: Engine, name: str, text: str, timeout: float = 30) -> str:
    return wait_for(lambda: text in (log := engine.logs(name)) and log, timeout=timeout,
                    interval=0.3, what=f"{text!r} from {name}")


def pipes(shared: SharedDir):
    """Where the host sees the pipes."""
    return shared.path / "pipes"


def seq(n: int) -> str:
    return "".join(f"{i}\n" for i in range(1, n + 1))


def test_container_mount_reaches_the_host_and_other_containers(image, engine, shared):
    dnpfs = start_dnpfs(engine, image, shared, engine.volume("store"))
    [line] = fuse_mounts_on(pipes(shared))
    assert " dnpfs:sqlite:/var/lib/dnpfs/store.sqlite " in line
    sh(["mkfifo", str(pipes(shared) / "lines")])
    # An application container writes, the host reads.
    start_app(engine, shared, "writer", f"seq 1 {LINES} > /mnt/dnpfs/pipes/lines; echo wrote")
    got = sh(["timeout", "60", "cat", str(pipes(shared) / "lines")], timeout=90).stdout
    assert got == seq(LINES)
    # The host writes, an application container reads.
    reader = start_app(engine, shared, "reader", "cat /mnt/dnpfs/pipes/lines; echo reader-rc=$?")
    sh(["sh", "-c", f"seq 1 {LINES} > {pipes(shared)}/lines"], timeout=60)
    log = wait_log(engine, reader, "reader-rc=", timeout=60)
    assert log == seq(LINES) + "reader-rc=0\n"
    assert engine.state(dnpfs) == "running"


def test_podman_stop_stores_held_writes_and_ends_readers(image, engine, shared):
    """SIGTERM from `podman stop` reaches dnpfs (PID 1 through the
    entrypoint's exec): a blocked reader gets EOF, a writer's data is stored,
    and dnpfs exits 0 well within the grace period."""
    store = engine.volume("store")
    dnpfs = start_dnpfs(engine, image, shared, store)
    sh(["mkfifo", str(pipes(shared) / "waiting"), str(pipes(shared) / "held")])
    reader = start_app(engine, shared, "reader", "cat /mnt/dnpfs/pipes/waiting; echo reader-rc=$?")
    # A writer whose session is still open: its line is in dnpfs, not yet
    # acknowledged by a close.
    start_app(engine, shared, "writer",
              "exec 3>/mnt/dnpfs/pipes/held; echo held-line >&3; echo opened; sleep 1000")
    wait_log(engine, engine.name("writer"), "opened")
    time.sleep(1)  # let the reader block in read()
    started = time.monotonic()
    podman("stop", "-t", "15", dnpfs, timeout=60)
    took = time.monotonic() - started
    code = podman("inspect", "--format", "{{.State.ExitCode}}", dnpfs).stdout.strip()
    assert code == "0", engine.logs(dnpfs)
    assert took < 10, f"podman stop took {took:.1f} s"
    assert wait_log(engine, reader, "reader-rc=") == "reader-rc=0\n"
    assert fuse_mounts_on(pipes(shared)) == []  # unmounted, not left dead
    # The store volume kept the held line: a new dnpfs container serves it.
    start_dnpfs(engine, image, shared, store, what="dnpfs2")
    got = sh(["timeout", "30", "head", "-n1", str(pipes(shared) / "held")], timeout=60).stdout
    assert got == "held-line\n"


def test_killed_dnpfs_container_and_recovery(image, engine, shared):
    """SIGKILL: the FUSE connection is aborted and the mount stays, dead
    (ENOTCONN), on the host and in the applications.  Starting the dnpfs
    container again is all it takes: dnpfs detaches the dead mount and mounts
    anew, and the applications, not restarted, see the new mount and the pipes'
    data."""
    dnpfs = start_dnpfs(engine, image, shared, engine.volume("store"))
    sh(["mkfifo", str(pipes(shared) / "jobs")])
    sh(["sh", "-c", f"echo before-kill > {pipes(shared)}/jobs"])
    app = start_app(engine, shared, "app", "sleep 1000")
    podman("kill", dnpfs)
    wait_for(lambda: engine.state(dnpfs) == "exited", timeout=30, what="dnpfs to exit")
    host = sh(["ls", str(pipes(shared))], check=False)
    assert "Transport endpoint is not connected" in host.stderr
    seen = engine.exec(app, "ls /mnt/dnpfs/pipes", check=False)
    assert "Transport endpoint is not connected" in seen.stderr
    assert not engine.healthy(dnpfs)
    podman("start", dnpfs)
    engine.wait_healthy(dnpfs)
    assert "stale mount of a dead daemon; unmounting it" in engine.logs(dnpfs)
    assert len(fuse_mounts_on(pipes(shared))) == 1  # the new one, the dead one detached
    got = engine.exec(app, "timeout 30 cat /mnt/dnpfs/pipes/jobs", timeout=60).stdout
    assert got == "before-kill\n"  # stored before the kill (the writer had closed)


def test_applications_cannot_write_into_the_host_directory_while_dnpfs_is_down(
        image, engine, shared):
    """Applications started before dnpfs mounts (podman-compose before podman
    4.6 ignores `condition: service_healthy`; an engine restarting every
    container at boot) fail to write instead of leaving a file that dnpfs
    would refuse to mount over; once dnpfs mounts, the same containers use
    the pipes."""
    app = start_app(engine, shared, "app", "sleep 1000")
    early = engine.exec(app, "mkdir -p /mnt/dnpfs/pipes && date > /mnt/dnpfs/pipes/ticks",
                        check=False)
    assert early.returncode != 0 and "Read-only file system" in early.stderr
    start_dnpfs(engine, image, shared, engine.volume("store"))
    engine.exec(app, "echo late > /mnt/dnpfs/pipes/ticks")
    got = sh(["timeout", "30", "cat", str(pipes(shared) / "ticks")], timeout=60).stdout
    assert got == "late\n"


@pytest.fixture(scope="session")
def busybox(tmp_path_factory):
    ensure_debs("podman")
    return busybox_image(tmp_path_factory.mktemp("busybox"))


def test_busybox_container_reads_with_dd(image, engine, shared, busybox):
    """An Alpine-style application (busybox is its whole userland) reads with
    busybox dd: read(2), which dnpfs serves today."""
    start_dnpfs(engine, image, shared, engine.volume("store"))
    sh(["mkfifo", str(pipes(shared) / "lines")])
    reader = start_app(engine, shared, "reader",
                       "dd if=/mnt/dnpfs/pipes/lines bs=4096 2>/dev/null; echo reader-rc=$?",
                       image=busybox)
    sh(["sh", "-c", f"seq 1 {LINES} > {pipes(shared)}/lines"], timeout=60)
    assert wait_log(engine, reader, "reader-rc=", timeout=60) == seq(LINES) + "reader-rc=0\n"


def test_busybox_container_reads_with_cat(image, engine, shared, busybox):
    """busybox cat (Alpine's cat) tries sendfile(): the page-cache read gets
    EINVAL and cat goes on with read(), in a container as on the host."""
    start_dnpfs(engine, image, shared, engine.volume("store"))
    sh(["mkfifo", str(pipes(shared) / "lines")])
    reader = start_app(engine, shared, "reader", "cat /mnt/dnpfs/pipes/lines; echo reader-rc=$?",
                       image=busybox)
    sh(["sh", "-c", f"seq 1 {LINES} > {pipes(shared)}/lines"], timeout=60)
    assert wait_log(engine, reader, "reader-rc=", timeout=60) == seq(LINES) + "reader-rc=0\n"


@pytest.mark.parametrize("sig", ["INT", "TERM", "KILL"])
def test_readers_on_the_host_and_in_an_app_container_blocked_on_a_container_mount_end_at_once(
        image, engine, shared, sig):
    """dnpfs in its container's PID namespace cannot see the host's processes
    or another container's (FUSE reports them as pid 0): a blocked reader
    there is ended by the kernel's FUSE interrupt.  A host `dd` and a `cat` in
    an application container, both blocked on an empty pipe, end within a
    second of the signal, and the pipe still works."""
    start_dnpfs(engine, image, shared, engine.volume("store"))
    sh(["mkfifo", str(pipes(shared) / "idle")])
    # The default action for SIGINT: background jobs of a shell ignore it.
    host = subprocess.Popen(["python3", "-c",
                             "import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL);"
                             f" os.execvp('dd', ['dd', 'if={pipes(shared) / 'idle'}',"
                             " 'of=/dev/null', 'status=none'])"])
    # In the foreground of the container's shell, so SIGINT keeps its default.
    app = start_app(engine, shared, "blocked",
                    "sh -c 'echo started $$; exec cat /mnt/dnpfs/pipes/idle'; echo app-rc=$?")
    started = wait_log(engine, app, "started ")
    cat_pid = started.split("started ", 1)[1].split()[0]
    wait_for(lambda: proc_state(host.pid) in ("S", "D"), 10, what="the host reader to block")
    time.sleep(1.0)  # both in read()
    assert host.poll() is None and "app-rc=" not in engine.logs(app)
    start = time.monotonic()
    host.send_signal(getattr(signal, f"SIG{sig}"))
    engine.exec(app, f"kill -{sig} {cat_pid}")
    host.wait(5)
    host_took = time.monotonic() - start
    wait_log(engine, app, "app-rc=", timeout=5)
    app_took = time.monotonic() - start
    assert host_took < 1.0, f"the host reader took {host_took:.2f} s to end"
    assert app_took < 2.0, f"the container's reader took {app_took:.2f} s (podman exec included)"
    # The pipe serves the next reader, and nothing was taken from it.
    sh(["sh", "-c", f"echo still > {pipes(shared)}/idle"], timeout=30)
    assert sh(["timeout", "30", "cat", str(pipes(shared) / "idle")], timeout=60).stdout == "still\n"

"""deploy/systemd/dnpfs@.service run as systemd would run it
(tests/deploy/unit.py: its ExecStart with %f, Environment= and
EnvironmentFile= expanded, supervised as Type=notify, stopped as
ExecStop=/KillSignal=/TimeoutStopSec= say) on the clean machine where
scripts/install put /usr/local/bin/dnpfs, as docs/deploy.md's steps do.
The mount it makes exchanges exact bytes with a second mount of the same
store, and the stop stores what a writer still holding the pipe open had
written."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from ..util import wait_for
from .conftest import DEPLOY, exchange
from .machine import Machine
from .unit import Service

pytestmark = pytest.mark.deploy_install

UNIT = DEPLOY / "systemd" / "dnpfs@.service"
MOUNTPOINT = "/mnt/unit-pipes"  # a "-" in it: escaped as \x2d in the instance name
SECOND = "/mnt/second"


@pytest.fixture
def settings(request, tmp_path):
    """The env file (/etc/dnpfs/INSTANCE.env, absent for the embedded store)
    and the `dnpfs mount` options of a second mount of the same store."""
    if request.param == "embedded":
        return None, ["--store", "/var/lib/dnpfs/store.sqlite"]
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    prefix = f"entry-unit-{uuid.uuid4().hex[:8]}."
    return (f"# as deploy/systemd/dnpfs.env.example\nDNPFS_KAFKA_BOOTSTRAP={bootstrap}\n"
            f"DNPFS_MOUNT_ARGS=--topic-prefix {prefix}\n",
            ["--kafka", bootstrap, "--topic-prefix", prefix])


def _answers(m, path: str) -> bool:
    return m.run(["getfattr", "-n", "user.dnpfs.pid", path], check=False).returncode == 0


@pytest.mark.parametrize("settings", ["embedded", "kafka"], indirect=True)
def test_unit_serves_a_mount_and_its_stop_stores_held_writes(installed, tmp_path, settings):
    m = installed.machine
    env_file, second_args = settings
    instance = m.run(["systemd-escape", "--path", MOUNTPOINT]).stdout.decode().strip()
    assert instance == r"mnt-unit\x2dpipes"
    if env_file:
        m.sh("mkdir -p /etc/dnpfs")
        m.run(["tee", f"/etc/dnpfs/{instance}.env"], input=env_file.encode())
    service = Service(m, UNIT.read_text(), instance, tmp_path / "journal.log").start()
    assert service.argv[:3] == ["/usr/local/bin/dnpfs", "mount", "--foreground"]
    assert service.argv[-1] == MOUNTPOINT
    writer = None
    try:
        # Type=notify: the start is over when the daemon said READY=1, and
        # from then on the mount answers (no waiting: what an After= unit sees).
        assert service.proc.poll() is None, (tmp_path / "journal.log").read_text()
        assert _answers(m, MOUNTPOINT), "READY=1 came before the mount answered"
        # The main process is the daemon itself.
        pid = int(m.run(["getfattr", "-n", "user.dnpfs.pid", "--only-values",
                         MOUNTPOINT]).stdout)
        assert pid == service.ns_mainpid()

        m.sh(f"mkdir -p {SECOND}")
        m.run(["dnpfs", "mount", *second_args, SECOND], timeout=60)
        exchange(m, MOUNTPOINT, SECOND, "to-second", tmp_path)
        exchange(m, SECOND, MOUNTPOINT, "from-second", tmp_path)

        # A writer that wrote and keeps the pipe open when the unit stops.
        data = tmp_path / "held.in"
        data.write_bytes(bytes(range(256)) * 16384)  # 4 MiB
        written = tmp_path / "held.written"
        m.sh(f"mkfifo {MOUNTPOINT}/held")
        writer = m.start(["bash", "-c", f"exec 3>{MOUNTPOINT}/held; cat {data} >&3;"
                          f" echo done > {written}; exec sleep 600"], tmp_path / "writer.log")
        writer_pid = Machine.pid_of(writer)
        wait_for(lambda: written.exists(), 60, what="the writer's cat to finish")

        stopped = service.stop(); print("STOPPED", stopped)
        journal = (tmp_path / "journal.log").read_text(errors="replace")
        assert not stopped.killed, f"not stopped within TimeoutStopSec:\n{journal}"
        # Exit 0, or SIGTERM (what systemd counts as a clean stop too).
        assert stopped.returncode in (0, -signal.SIGTERM), journal
        assert [r.returncode for r in stopped.exec_stop] == [0], stopped.exec_stop
        assert MOUNTPOINT not in m.mounts()

        # EOF within 20 s: before the session timeout (30 s) would end the
        # session of a daemon that died without storing its end, so the stop
        # itself ended it.
        got = tmp_path / "held.out"
        r = m.run(["bash", "-c", f"timeout 20 cat {SECOND}/held > {got}"], check=False,
                  timeout=60)
        assert r.returncode == 0, f"cat exited {r.returncode} (124: no EOF within 20 s)"
        assert got.read_bytes() == data.read_bytes(), \
            f"{got.stat().st_size} of {data.stat().st_size} bytes"
    finally:
        if writer is not None:
            os.kill(writer_pid, signal.SIGKILL)
            writer.wait()
        if service.proc.poll() is None:
            service.stop()
        for mountpoint in {MOUNTPOINT, SECOND} & set(m.mounts()):
            m.run(["dnpfs", "umount", mountpoint], check=False)  # also a dead mount
        m.run(["rm", "-f", f"/etc/dnpfs/{instance}.env"], check=False)
    assert not {MOUNTPOINT, SECOND} & set(m.mounts())


@pytest.mark.parametrize("settings", ["embedded"], indirect=True)
def test_unit_comes_back_after_the_daemon_is_killed(installed, tmp_path, settings):
    """kill -9 of the daemon leaves a dead mount; ExecStop detaches it, and
    Restart=on-failure mounts again (ExecStartPre's mkdir would fail on the
    dead mount).  Records stored before the crash are read after it."""
    m = installed.machine
    _, second_args = settings
    instance = m.run(["systemd-escape", "--path", MOUNTPOINT]).stdout.decode().strip()
    service = Service(m, UNIT.read_text(), instance, tmp_path / "journal.log").start()
    try:
        assert _answers(m, MOUNTPOINT)
        m.sh(f"mkfifo {MOUNTPOINT}/kept && printf 'before the crash' > {MOUNTPOINT}/kept")
        os.kill(service.mainpid, signal.SIGKILL)
        assert service.exited(), "Restart=on-failure did not restart after SIGKILL"
        assert service.proc.poll() is None, (tmp_path / "journal.log").read_text()
        assert _answers(m, MOUNTPOINT), "READY=1 came before the restarted mount answered"
        # printf's close() returns once its bytes are stored; the session's
        # END is stored at FUSE_RELEASE, which the kernel sends after close()
        # returned.  A kill -9 in between leaves the session open until the
        # dead mount's lease ends (--session-timeout, 30 s): EOF comes then.
        assert m.run(["timeout", "60", "cat", f"{MOUNTPOINT}/kept"],
                     timeout=90).stdout == b"before the crash"
        m.sh(f"mkdir -p {SECOND}")
        m.run(["dnpfs", "mount", *second_args, SECOND], timeout=60)
        exchange(m, MOUNTPOINT, SECOND, "after-restart", tmp_path)
        stopped = service.stop()
        assert not stopped.killed and stopped.returncode in (0, -signal.SIGTERM)
    finally:
        if service.proc.poll() is None:
            service.stop()
        for mountpoint in {MOUNTPOINT, SECOND} & set(m.mounts()):
            m.run(["dnpfs", "umount", mountpoint], check=False)
    assert not {MOUNTPOINT, SECOND} & set(m.mounts())

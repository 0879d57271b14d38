"""The container image (built once per session: tests/deploy/image.py), its
filesystem checked and run in a chroot; test_containers.py runs it as containers.

- The run: the image's filesystem, chrooted into inside a private mount
  namespace, with the image's own environment, entrypoint and HEALTHCHECK
  command.  The daemon mounts /dev/fuse for real and serves pipes; only the
  engine's isolation (namespaces, cgroups, capabilities) is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from dnpfs import __version__

from ..util import wait_for
from .conftest import DEPLOY, sh
from .image import Image

pytestmark = pytest.mark.deploy_image

# -- running ----------------------------------------------------------------

class Chroot:
    """The image's filesystem as a container would see it, minus the engine:
    a private mount namespace (held open by a sleeping process) with tmpfs
    where the container would have volumes, /proc, and the few devices a
    container gets, /dev/fuse among them.  Commands run chrooted, with the
    image's environment and nothing of ours."""

    def __init__(self, image: Image):
        self.image = image
        self.env = dict(e.split("=", 1) for e in image.config.get("Env") or [])
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sleep", "infinity"])
        ours = os.readlink("/proc/self/ns/mnt")
        try:
            wait_for(lambda: os.readlink(f"/proc/{self.holder.pid}/ns/mnt") != ours,
                     timeout=10, what="a private mount namespace")
            self._mount_what_a_container_gets(image.root)
        except BaseException:
            self.close()
            raise

    def _mount_what_a_container_gets(self, root: Path) -> None:
        for path in ("mnt", "var/lib/dnpfs", "tmp", "run"):
            self.host(["mount", "-t", "tmpfs", "tmpfs", f"{root}/{path}"])
        self.host(["mount", "-t", "proc", "proc", f"{root}/proc"])
        self.host(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", f"{root}/dev"])
        for dev in ("null", "zero", "full", "random", "urandom", "tty", "fuse"):
            self.host(["touch", f"{root}/dev/{dev}"])
            self.host(["mount", "--bind", f"/dev/{dev}", f"{root}/dev/{dev}"])

    def host(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """A command of this machine's, inside the namespace."""
        return sh(["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv], **kw)

    def argv(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        environment = [f"{k}={v}" for k, v in {**self.env, **(env or {})}.items()]
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--",
                "env", "-i", *environment, "chroot", str(self.image.root), *argv]

    def run(self, argv: list[str], env: dict[str, str] | None = None, **kw):
        """A command of the image's."""
        return sh(self.argv(argv, env), **kw)

    def start(self, argv: list[str], env: dict[str, str] | None, log: Path) -> subprocess.Popen:
        """Started by exec all the way down (nsenter, env, chroot, the
        entrypoint's exec): the Popen's pid is the daemon's."""
        with open(log, "wb") as out:
            return subprocess.Popen(self.argv(argv, env), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


@pytest.fixture
def chroot(image):
    c = Chroot(image)
    yield c
    c.close()


def _entrypoint(image: Image) -> list[str]:
    return [*(image.config.get("Entrypoint") or []), *(image.config.get("Cmd") or [])]


def _healthcheck(image: Image) -> list[str]:
    test = image.healthcheck["Test"]
    return test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]


class Daemon:
    """The image's entrypoint running in the chroot, as `docker run` starts it."""

    def __init__(self, chroot: Chroot, log: Path, env: dict[str, str] | None = None,
                 args: list[str] = ()):
        self.chroot, self.log, self.env = chroot, log, env or {}
        self.proc = chroot.start([*_entrypoint(chroot.image), *args], self.env, log)
        try:
            wait_for(self.healthy, timeout=60, interval=0.2, what="the image's HEALTHCHECK")
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited {self.proc.returncode}:\n"
                                 + self.log.read_text(errors="replace"))
        return self.check_health()

    def check_health(self) -> bool:
        return self.chroot.run(_healthcheck(self.chroot.image), self.env, check=False,
                               timeout=10).returncode == 0

    def shell(self, script: str, timeout: float = 30) -> str:
        return self.chroot.run(["sh", "-euc", script], self.env, timeout=timeout).stdout

    def stop(self) -> int:
        """What `docker stop` does: the image's STOPSIGNAL, then a deadline."""
        self.proc.send_signal(getattr(signal, self.chroot.image.config.get("StopSignal")
                                      or "SIGTERM"))
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the daemon did not stop within 10 s of its stop signal:\n"
                                 + self.log.read_text(errors="replace"))


def _mountinfo_of(daemon: Daemon, mountpoint: str) -> list[str]:
    text = daemon.shell("cat /proc/self/mountinfo")
    return [line for line in text.splitlines() if line.split()[4] == mountpoint]


# -- the tests --------------------------------------------------------------

def test_image_runs_dnpfs_of_this_checkout(image):
    root = image.root
    direct = sh(["chroot", str(root), "/opt/dnpfs/venv/bin/dnpfs", "--version"])
    assert direct.stdout.strip() == f"dnpfs {__version__}"
    # The entrypoint runs a command that does not start with "-" instead of
    # mounting: `docker run IMAGE dnpfs --version`.
    env = [f"{e}" for e in image.config.get("Env") or []]
    through = sh(["env", "-i", *env, "chroot", str(root), *_entrypoint(image), "dnpfs", "--version"])
    assert through.stdout.strip() == f"dnpfs {__version__}"


def test_image_config_is_what_the_deployments_rely_on(image):
    config = image.config
    assert config["Entrypoint"] == ["dnpfs-entrypoint"]
    assert "/var/lib/dnpfs" in (config.get("Volumes") or {})
    assert config.get("StopSignal") in (None, "SIGTERM", "15")
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["DNPFS_MOUNTPOINT"] == "/mnt/dnpipes"
    assert env["PATH"].startswith("/opt/dnpfs/venv/bin:")
    health = image.healthcheck
    assert "user.dnpfs.pid" in " ".join(health["Test"])
    assert 0 < health["Timeout"] <= 10 * 10**9


def test_image_is_slim_and_pinned(image):
    root = image.root
    # No build tools in the runtime stage.
    for path in ("usr/bin/gcc", "usr/include/fuse3", "usr/include/python3.11", "opt/pip",
                 "opt/dnpfs/venv/bin/pip"):
        assert not (root / path).exists(), f"/{path} is in the runtime image"
    assert image.size - image.base_size < 100 * 2**20, \
        f"the image adds {(image.size - image.base_size) >> 20} MiB to its base"
    # Exactly the pinned distributions, and dnpfs.
    listing = sh(["chroot", str(root), "/opt/dnpfs/venv/bin/python", "-c",
                  "import importlib.metadata as m, json; print(json.dumps("
                  "{d.metadata['Name'].lower().replace('_', '-'): d.version"
                  " for d in m.distributions()}))"])
    installed = json.loads(listing.stdout)
    pinned = {}
    for line in (DEPLOY / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pinned[name.lower().replace("_", "-")] = version
    assert installed == {**pinned, "dnpfs": __version__}


def test_image_mounts_and_serves_pipes(image, chroot, tmp_path):
    """`docker run` with no settings: the embedded store on /mnt/dnpipes."""
    daemon = Daemon(chroot, tmp_path / "daemon.log")
    try:
        out = daemon.shell(
            "mkfifo /mnt/dnpipes/ticks\n"
            "echo tick-1 > /mnt/dnpipes/ticks; echo tick-2 > /mnt/dnpipes/ticks\n"
            "timeout 10 cat /mnt/dnpipes/ticks; timeout 10 cat /mnt/dnpipes/ticks\n")
        assert out == "tick-1\ntick-2\n"
        [line] = _mountinfo_of(daemon, "/mnt/dnpipes")
        assert " - fuse.dnpfs dnpfs:sqlite:/var/lib/dnpfs/store.sqlite " in line
        assert daemon.shell("ls /var/lib/dnpfs").split().count("store.sqlite") == 1
        assert "(malloc: jemalloc)" in daemon.log.read_text()  # the image ships libjemalloc2
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log.read_text()
    assert not daemon.check_health(), "healthy after the daemon stopped"
    assert _mountinfo_of(daemon, "/mnt/dnpipes") == []


def test_image_takes_its_settings_from_the_environment(image, chroot, tmp_path):
    env = {"DNPFS_MOUNTPOINT": "/mnt/other", "DNPFS_STORE": "/var/lib/dnpfs/other.sqlite",
           "DNPFS_OPTIONS": "mode=0640"}
    daemon = Daemon(chroot, tmp_path / "daemon.log", env, args=["--retention-days", "2"])
    try:
        daemon.shell("mkfifo /mnt/other/jobs")
        mode = daemon.shell("stat -c %a /mnt/other/jobs").strip()
        [line] = _mountinfo_of(daemon, "/mnt/other")
        cmdline = Path(f"/proc/{daemon.proc.pid}/cmdline").read_bytes().split(b"\0")
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()
    assert mode == "640"
    assert " dnpfs:sqlite:/var/lib/dnpfs/other.sqlite " in line
    assert [b"--retention-days", b"2"] == cmdline[cmdline.index(b"--retention-days"):][:2]


@pytest.mark.kafka
def test_image_serves_pipes_from_kafka(image, chroot, tmp_path, kafka_bootstrap):
    """The image's aiokafka against the dev broker (scripts/kafka-dev): the
    chroot shares this machine's network."""
    prefix = f"deploy-test-{uuid.uuid4().hex[:8]}."
    daemon = Daemon(chroot, tmp_path / "daemon.log",
                    {"DNPFS_KAFKA_BOOTSTRAP": kafka_bootstrap, "DNPFS_TOPIC_PREFIX": prefix})
    try:
        out = daemon.shell("mkfifo /mnt/dnpipes/ticks\n"
                           "date +tick-%s > /mnt/dnpipes/ticks\n"
                           "timeout 30 cat /mnt/dnpipes/ticks\n", timeout=60)
        assert out.startswith("tick-")
        [line] = _mountinfo_of(daemon, "/mnt/dnpipes")
        assert f" dnpfs:kafka:{kafka_bootstrap}/{prefix} " in line
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()

"""Running containers for the deploy tests: podman with runc, as docs/deploy.md
says (crun fails on this machine's hybrid cgroups and default rlimits).

Everything a test creates has a unique name and is removed when it ends:
containers, volumes, pods, images it built other than the session's.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from ..util import wait_for
from .conftest import sh

PODMAN = ["podman", "--runtime", "runc"]
# runc refuses podman's default rlimits here (nofile above the hard limit).
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# What a dnpfs container needs: the device, mount(2), no AppArmor profile that
# forbids mounting (the Dockerfile's `docker run` line).
FUSE = ["--device", "/dev/fuse", "--cap-add", "SYS_ADMIN",
        "--security-opt", "apparmor=unconfined"]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return sh([*PODMAN, *args], timeout=timeout, check=check)


class Engine:
    """Names and removes what one test runs."""

    def __init__(self):
        self.prefix = f"dnpfs-t{uuid.uuid4().hex[:8]}"
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def volume(self, what: str) -> str:
        name = self.name(what)
        self.volumes.append(name)
        return name

    def run(self, what: str, image: str, *args: str, options: list[str] = ()) -> str:
        """`podman run -d`; the container's name."""
        name = self.name(what)
        self.containers.append(name)
        podman("run", "-d", "--name", name, *LIMITS, *options, image, *args)
        return name

    def logs(self, name: str) -> str:
        """Its output, stdout and stderr in the order written."""
        return subprocess.run([*PODMAN, "logs", name], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60).stdout

    def exec(self, name: str, script: str, timeout: float = 30, check: bool = True):
        return podman("exec", name, "sh", "-c", script, timeout=timeout, check=check)

    def state(self, name: str) -> str:
        return podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()

    def healthy(self, name: str) -> bool:
        # No systemd here to run the HEALTHCHECK on its interval: run it now.
        return podman("healthcheck", "run", name, check=False, timeout=30).returncode == 0

    def wait_healthy(self, name: str, timeout: float = 60) -> None:
        def ready():
            if self.state(name) != "running":
                raise AssertionError(f"{name} is {self.state(name)}:\n{self.logs(name)}")
            return self.healthy(name)
        wait_for(ready, timeout=timeout, interval=0.5, what=f"{name}'s HEALTHCHECK")

    def close(self) -> None:
        for name in reversed(self.containers):
            podman("rm", "-f", "-t", "0", name, check=False)
        for name in self.volumes:
            podman("volume", "rm", "-f", name, check=False)


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


def fuse_mounts_on(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if line.split()[4] == str(path) and " - fuse.dnpfs " in line]


def unmount_all(path: Path) -> None:
    """Lazily detach everything on and under path, the deepest first (a dead
    FUSE mount included)."""
    for point in sorted(mounts_under(path), key=len, reverse=True):
        sh(["umount", "-l", point], check=False)


class SharedDir:
    """A host directory made a mount point of its own with shared propagation,
    as a bind source with rshared needs (docs/deploy.md): what /mnt/dnpipes is
    on a host that runs dnpfs in a container."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        sh(["mount", "--bind", str(path), str(path)])
        sh(["mount", "--make-rshared", str(path)])

    def close(self) -> None:
        unmount_all(self.path)


BUSYBOX_IMAGE_RECIPE = 1


def busybox_image(workdir: Path) -> str:
    """An image with busybox as its whole userland, as Alpine's: Debian's
    static busybox, installed with its applet links on a scratch image.
    (docker.io/library/alpine cannot be pulled here.)"""
    name = f"localhost/dnpfs-test-busybox:{BUSYBOX_IMAGE_RECIPE}"
    if sh(["podman", "image", "exists", name], check=False).returncode == 0:
        return name
    ctx = workdir / "busybox"
    ctx.mkdir()
    sh(["apt-get", "download", "busybox-static"], cwd=ctx, timeout=300)
    [deb] = ctx.glob("busybox-static_*.deb")
    sh(["dpkg-deb", "-x", str(deb), str(ctx / "x")])
    (ctx / "Containerfile").write_text(
        "FROM scratch\n"
        "COPY x/bin/busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp", "/mnt"]\n'
        'RUN ["/bin/busybox", "--install", "-s"]\n')
    sh(["podman", "build", "--isolation", "chroot", "--pull=never", "-q", "-t", name,
        "--ignorefile", "/dev/null", str(ctx)], timeout=300)
    return name



def engine_env(workdir: Path) -> dict[str, str]:
    """The environment for podman run by another program (podman-compose,
    podman kube play's containers): containers.conf with runc and the
    rlimits above, as a host would set in /etc/containers/containers.conf."""
    conf = workdir / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
                    '[engine]\nruntime = "runc"\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf)}

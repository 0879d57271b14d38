"""deploy/docker-compose.yml run with podman-compose: dnpfs and two
application containers passing ticks through the shared pipe directory.

What is changed from the shipped file, and only that (`compose_file`):
images that cannot be pulled here are replaced by local stand-ins (the
session's dnpfs image for the `build:`, the debootstrap bookworm for
debian:bookworm-slim, a busybox-only image for the producer, so one
application is Alpine-style), the shared directory is a test directory instead
of /mnt/dnpfs, and the `kafka` service is replaced by the dev broker
(host network for dnpfs, a topic prefix of the test's own).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from ..util import wait_for
from .conftest import DEPLOY, ensure_debs, sh
from .containers import SharedDir, busybox_image, engine_env, fuse_mounts_on, podman
from .image import BASE

pytestmark = [pytest.mark.deploy_image, pytest.mark.kafka]


def compose_file(path: Path, *, dnpfs_image: str, busybox: str, shared: Path,
                 bootstrap: str, prefix: str) -> dict:
    spec = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = spec["services"]
    del services["kafka"], spec["volumes"]
    dnpfs = services["dnpfs"]
    del dnpfs["build"], dnpfs["depends_on"]
    dnpfs["image"] = dnpfs_image
    dnpfs["network_mode"] = "host"
    dnpfs["environment"].update(DNPFS_KAFKA_BOOTSTRAP=bootstrap, DNPFS_TOPIC_PREFIX=prefix)
    services["producer"]["image"] = busybox
    services["consumer"]["image"] = BASE
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume["source"] == "/mnt/dnpfs":
                volume["source"] = str(shared)
    path.write_text(yaml.safe_dump(spec))
    return spec


@pytest.fixture
def compose(tmp_path):
    ensure_debs("podman", "runc")
    # From the test extras (pyproject.toml), next to this Python.
    sh([sys.executable, "-m", "podman_compose", "--version"])
    return [sys.executable, "-m", "podman_compose"]


def test_compose_file_passes_ticks_between_containers(image, compose, tmp_path, kafka_bootstrap):
    shared = SharedDir(tmp_path / "dnpfs")
    pipes = shared.path / "pipes"
    project = f"dnpfs-t{uuid.uuid4().hex[:8]}"
    file = tmp_path / "docker-compose.yml"
    compose_file(file, dnpfs_image=image.name, busybox=busybox_image(tmp_path),
                 shared=shared.path, bootstrap=kafka_bootstrap, prefix=f"{project}.")
    env = engine_env(tmp_path)
    cmd = [*compose, "-p", project, "-f", str(file)]

    def run(*args, timeout=180, check=True):
        r = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=timeout)
        if check and r.returncode:
            raise AssertionError(f"podman-compose {' '.join(args)} exited {r.returncode}:\n"
                                 f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def logs(service):
        return subprocess.run(["podman", "logs", f"{project}_{service}_1"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout

    volumes: list[str] = []
    try:
        up = run("up", "-d")
        # The image's VOLUME (the store) is an anonymous volume: removed at the end.
        volumes = podman("inspect", "--format",
                         "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}",
                         f"{project}_dnpfs_1").stdout.split()
        try:
            wait_for(lambda: fuse_mounts_on(pipes), timeout=60, interval=0.5,
                     what="dnpfs's mount on the host directory")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- up\n{up.stdout}\n{up.stderr}\n--- dnpfs\n"
                                 + logs("dnpfs")) from None
        # The consumer prints a date a second, from the busybox producer,
        # through Kafka (before the producer's first write, cat finds no pipe).
        def ticks():
            return [t for t in logs("consumer").splitlines() if " UTC " in t]
        wait_for(lambda: len(ticks()) >= 3, timeout=90, interval=1,
                 what="three ticks in the consumer's log")
        assert (pipes / "ticks").exists()  # the host sees the pipe too
        assert podman("healthcheck", "run", f"{project}_dnpfs_1", check=False).returncode == 0
        down = run("down", timeout=300)
        assert fuse_mounts_on(pipes) == [], down.stderr
        code = podman("inspect", "--format", "{{.State.ExitCode}}", f"{project}_dnpfs_1",
                      check=False)
        assert code.returncode != 0 or code.stdout.strip() == "0"
    finally:
        run("down", "-t", "0", check=False, timeout=300)
        for volume in volumes:
            podman("volume", "rm", "-f", volume, check=False)
        shared.close()

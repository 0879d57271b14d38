"""The container image, built once per test session from the Dockerfile of this
checkout (tests/deploy/conftest.py's `image` fixture): the chroot tests
(test_image.py) and the container tests (test_containers.py) share the build.

- The base: docker.io/library/debian:bookworm-slim cannot be pulled here, so a
  Debian bookworm minbase made with debootstrap stands in for it (cached in
  /var/cache/dnpfs/deploy-test and in podman's storage: a second run skips it).
- The build: `podman build --isolation chroot` of the real Dockerfile, both
  stages on that base (BASE_IMAGE; podman's --from would replace the first
  FROM only), with podman's layer cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ROOT, ensure_debs, sh

IMAGE = "localhost/dnpfs:test"
# Bump when the base recipe below changes: a new name, a new cache entry.
BASE_RECIPE = 1
BASE = f"localhost/dnpfs-test-base:bookworm-{BASE_RECIPE}"
BUILD_BASE = f"{BASE}-hosttrust"
CACHE = Path("/var/cache/dnpfs/deploy-test")
MIRROR = os.environ.get("DNPFS_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# What debian:bookworm-slim carries in /etc/apt: the release, its updates and
# security updates.
DEBIAN_SOURCES = """\
Types: deb
URIs: {mirror}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


@dataclass
class Image:
    name: str           # the image id: what this session built, whatever the tag says later
    root: Path          # the image's filesystem, mounted read-only
    config: dict        # podman image inspect: Config
    healthcheck: dict   # podman image inspect: Healthcheck (docker-format images only)
    size: int
    base_size: int


# -- building ---------------------------------------------------------------

@contextlib.contextmanager
def _locked(path: Path):
    """One build at a time on this machine (two test sessions share the cache)."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _image_id(name: str) -> str | None:
    r = sh(["podman", "image", "inspect", "--format", "{{.Id}}", name], check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def _remove_tree(path: Path) -> None:
    """rm -rf of a debootstrap target, after detaching anything a failed run
    left mounted inside it (proc, sys), so nothing outside is touched."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    inside = sorted((p for p in points if p == str(path) or p.startswith(f"{path}/")),
                    key=len, reverse=True)
    for point in inside:
        sh(["umount", "-l", point], check=False)
    shutil.rmtree(path, ignore_errors=True)


def _debootstrap_tarball() -> Path:
    tarball = CACHE / f"debian-bookworm-minbase-{BASE_RECIPE}.tar"
    if tarball.exists():
        return tarball
    work = Path(tempfile.mkdtemp(dir=CACHE, prefix="debootstrap-"))
    try:
        sh(["debootstrap", "--variant=minbase", "bookworm", str(work), MIRROR], timeout=900)
        (work / "etc/apt/sources.list").unlink(missing_ok=True)
        (work / "etc/apt/sources.list.d/debian.sources").write_text(
            DEBIAN_SOURCES.format(mirror=MIRROR))
        sh(["chroot", str(work), "apt-get", "clean"])
        shutil.rmtree(work / "var/lib/apt/lists")
        (work / "var/lib/apt/lists/partial").mkdir(parents=True)
        partial = tarball.with_suffix(".partial")
        sh(["tar", "--numeric-owner", "-C", str(work), "-cf", str(partial), "."], timeout=300)
        partial.rename(tarball)
    finally:
        _remove_tree(work)
    return tarball


def _base_image() -> str:
    if _image_id(BASE) is None:
        sh(["podman", "import", "--message", "debootstrap --variant=minbase bookworm",
            str(_debootstrap_tarball()), BASE], timeout=300)
    return BASE


def _with_host_trust(base: str, workdir: Path) -> str:
    """The base plus this machine's CA bundle for pip.  Where a proxy re-signs
    TLS (as on the machines these tests run on), pip in the builder stage
    would not trust PyPI otherwise.  Test plumbing only: the Dockerfile and a
    build on debian:bookworm-slim need none of it."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.exists():
        return base
    ctx = workdir / "host-trust"
    ctx.mkdir()
    shutil.copy(bundle, ctx / "host-ca.crt")
    (ctx / "pip.conf").write_text("[global]\ncert = /etc/ssl/dnpfs-test-host-ca.crt\n")
    (ctx / "Containerfile").write_text(
        f"FROM {base}\n"
        "COPY host-ca.crt /etc/ssl/dnpfs-test-host-ca.crt\n"
        "COPY pip.conf /etc/pip.conf\n")
    sh(["podman", "build", "--isolation", "chroot", "--pull=never", "-q",
        "-t", BUILD_BASE, str(ctx)], timeout=300)
    return BUILD_BASE


def _build(build_base: str, log: Path) -> None:
    previous = _image_id(IMAGE)
    with open(log, "w") as out:
        result = subprocess.run(
            ["podman", "build", "--isolation", "chroot", "--pull=never", "--layers",
             "--format", "docker",  # OCI images drop HEALTHCHECK
             "--build-arg", f"BASE_IMAGE={build_base}",
             "-f", str(ROOT / "Dockerfile"), "-t", IMAGE, str(ROOT)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=1500)
    if result.returncode != 0:
        pytest.fail(f"podman build failed ({result.returncode}); the end of {log}:\n"
                    + log.read_text(errors="replace")[-6000:], pytrace=False)
    if previous and previous != _image_id(IMAGE):
        # The last build's image, now untagged; its layers stay cached.
        sh(["podman", "rmi", previous], check=False)


def built_image(tmp_path_factory):
    """The image, built (or found in the layer cache) and mounted read-only."""
    ensure_debs("podman", "debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    workdir = tmp_path_factory.mktemp("image")
    with _locked(CACHE / "lock"):
        base = _base_image()
        _build(_with_host_trust(base, workdir), workdir / "build.log")
        info = json.loads(sh(["podman", "image", "inspect", IMAGE]).stdout)[0]
        base_info = json.loads(sh(["podman", "image", "inspect", base]).stdout)[0]
        root = Path(sh(["podman", "image", "mount", info["Id"]]).stdout.strip())
    # Out of the lock: a second session may build meanwhile; this one goes on
    # with the image it built, by id.
    try:
        yield Image(info["Id"], root, info["Config"], info.get("Healthcheck") or {},
                    info["Size"], base_info["Size"])
    finally:
        sh(["podman", "image", "unmount", info["Id"]], check=False)



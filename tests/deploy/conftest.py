"""Deployment artefacts, checked and run: the image is built with podman
(chroot isolation), its filesystem run in a chroot (test_image.py) and the
image run as containers with podman and runc (test_containers.py); the
compose file and the Kubernetes manifests are validated against their schemas
(test_manifests.py) and run with podman-compose and `podman kube play`
(test_compose.py, test_kube.py); the systemd unit goes through
`systemd-analyze verify`.  See docs/deploy.md, "What was tested, and how".

The image tests install what they need (podman, runc, debootstrap) and take a
few minutes the first time; `-m "not deploy_image"` leaves them out locally.
CI runs them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "deploy_image: builds the container image with podman (minutes when cold)")


def sh(cmd: list[str], *, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a program; text output; on failure an AssertionError that shows it."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {result.returncode}\n"
                             f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    return result


def _installed(package: str) -> bool:
    # Not `dpkg -s`: that also succeeds for a removed package whose
    # configuration files are left.
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                            capture_output=True, text=True).stdout
    return status == "install ok installed"


def ensure_debs(*packages: str) -> None:
    """Install the Debian packages that are missing, as scripts/_deps.sh does.
    Fails, never skips: CI runs as root and must run these tests."""
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(f"needs the Debian packages {' '.join(missing)}: run as root (the test"
                    " installs them) or install them first", pytrace=False)
    sh(["apt-get", "update", "-qq"], timeout=600)
    sh(["apt-get", "install", "-y", "-qq", *missing], timeout=900,
       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


@pytest.fixture(scope="session")
def image(tmp_path_factory):
    """The image of this checkout's Dockerfile: one build per session (image.py)."""
    from .image import built_image
    yield from built_image(tmp_path_factory)

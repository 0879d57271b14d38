"""Deployment artefacts, checked and run: the image is built with podman
(chroot isolation), its filesystem run in a chroot (test_image.py) and the
image run as containers with podman and runc (test_containers.py); the
compose file and the Kubernetes manifests are validated against their schemas
(test_manifests.py) and run with podman-compose and `podman kube play`
(test_compose.py, test_kube.py); the systemd unit goes through
`systemd-analyze verify`.  What users run on a host, end to end, on a clean
machine inside this one (machine.py): scripts/install, /etc/fstab lines, the
systemd unit run as systemd would (unit.py).  See docs/deploy.md, "What was
tested, and how".

The image tests install what they need (podman, runc, debootstrap) and take a
few minutes the first time; `-m "not deploy_image"` leaves them out locally.
The install, fstab and unit tests share one run of scripts/install (half a
minute or more, pip from PyPI); `-m "not deploy_install"` leaves them out.
CI runs them all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .machine import SYSTEMD_PATH, Machine, base_debs

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "deploy_image: builds the container image with podman (minutes when cold)")
    config.addinivalue_line(
        "markers", "deploy_install: runs scripts/install on a clean machine (a minute: PyPI)")


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


@dataclass
class Installed:
    """A clean machine (tests/deploy/machine.py) on which scripts/install ran
    from a copy of this checkout, which was then deleted."""
    machine: Machine
    output: str


def install(machine: Machine, clone: Path) -> str:
    """scripts/install of *clone* as root runs it from a shell; the clone is
    deleted afterwards.  Its output."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = SYSTEMD_PATH + ":/sbin:/bin"
    result = machine.run(["bash", str(clone / "scripts" / "install")], env=env, timeout=900,
                         check=False)
    shutil.rmtree(clone)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"scripts/install exited {result.returncode}:\n{output}"
    return output


def copy_of_checkout(dest: Path) -> Path:
    """The checkout as a user's clone has it: its files, not our virtualenv,
    caches or build leftovers."""
    shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".pytest_cache", "build", "*.egg-info", "bench-results"))
    return dest


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """scripts/install on a clean machine: about half a minute to a minute
    (pip downloads dnpfs's dependencies from PyPI and compiles pyfuse3).
    Shared by the tests of the install, /etc/fstab and the systemd unit,
    which all use the command it installed."""
    # Installed here, on the real machine, first: apt in the namespace would
    # keep dpkg's records in the /var/lib overlay and put files on the real /usr.
    ensure_debs(*base_debs(ROOT))
    scratch = tmp_path_factory.mktemp("installed")
    machine = Machine(scratch / "machine")
    try:
        yield Installed(machine, install(machine, copy_of_checkout(scratch / "clone")))
    finally:
        machine.close()


def exchange(machine: Machine, a: str, b: str, pipe: str, scratch: Path,
             size: int = 1 << 20) -> None:
    """Random bytes (every byte value, newlines and NULs among them) written
    with `cat` into a new pipe on mountpoint *a* are what `cat` reads from
    the same pipe on mountpoint *b*, ending at EOF."""
    data, got = scratch / f"{pipe}.in", scratch / f"{pipe}.out"
    data.write_bytes(os.urandom(size))
    machine.sh(f"mkfifo {a}/{pipe} && cat {data} > {a}/{pipe}")
    r = machine.run(["bash", "-c", f"timeout 60 cat {b}/{pipe} > {got}"], check=False, timeout=90)
    assert r.returncode == 0, f"cat {b}/{pipe} exited {r.returncode} (124: no EOF within 60 s)"
    assert got.read_bytes() == data.read_bytes(), \
        f"{b}/{pipe}: {got.stat().st_size} bytes, not the {size} written on {a}"


@pytest.fixture(scope="session")
def image(tmp_path_factory):
    """The image of this checkout's Dockerfile: one build per session (image.py)."""
    from .image import built_image
    yield from built_image(tmp_path_factory)

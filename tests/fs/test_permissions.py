"""Who may touch a pipe: private mounts, allow_other, and uid/gid/mode enforced
for a second, unprivileged user."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ..conftest import DNPFS, ROOT, Mount
from ..util import run

OTHER_UID, GROUP = 23456, 4242


def as_other(cmd: str, groups: list[int] = ()) -> subprocess.CompletedProcess:
    """Run a shell command as an unprivileged user (no capabilities)."""
    grp = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", *grp,
                           "--inh-caps=-all", "bash", "-c", cmd],
                          capture_output=True, text=True, timeout=20)


@pytest.fixture
def open_mount(tmp_path):
    """A mount under a directory every user may traverse (pytest's are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="dnpfs-perm-"))
    base.chmod(0o755)
    mounts = []

    def make(*opts):
        m = Mount(base / f"m{len(mounts)}", ["--store", str(tmp_path / "s.sqlite")],
                  tmp_path / f"m{len(mounts)}.log", [a for o in opts for a in ("-o", o)])
        mounts.append(m)
        return m.start()

    yield make
    for m in mounts:
        m.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_mount_is_private_without_allow_other(open_mount):
    m = open_mount()
    os.mkfifo(m / "p")
    r = as_other(f"ls {m.path}")
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_allow_other_with_group_and_mode_enforced(open_mount):
    m = open_mount("allow_other", f"gid={GROUP}", "mode=0640")
    os.mkfifo(m / "p")
    st = os.stat(m / "p")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, GROUP, 0o640)
    run(f"printf secret > {m/'p'}", shell=True)

    stranger = as_other(f"cat {m/'p'}")
    assert stranger.returncode != 0 and "Permission denied" in stranger.stderr

    member = as_other(f"cat {m/'p'}", groups=[GROUP])
    assert member.returncode == 0 and member.stdout == "secret"
    # Group may read (0640), not write, and not create pipes (directory 0750).
    r = as_other(f"printf x > {m/'p'}", groups=[GROUP])
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = as_other(f"mkfifo {m/'q'}", groups=[GROUP])
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_uid_option_gives_pipes_to_a_user(open_mount):
    m = open_mount("allow_other", f"uid={OTHER_UID}", "mode=0600")
    r = as_other(f"mkfifo {m/'mine'} && printf hello > {m/'mine'} && cat {m/'mine'}")
    assert r.returncode == 0 and r.stdout == "hello", r.stderr
    assert os.stat(m / "mine").st_uid == OTHER_UID


def test_bad_owner_option_is_one_line(open_mount, tmp_path):
    mp = tmp_path / "mp"
    mp.mkdir()
    r = subprocess.run([*DNPFS, "mount", "-o", "mode=999", str(mp)],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.startswith("dnpfs: -o mode=999")

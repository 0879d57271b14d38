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


def _store_files(folder: Path) -> list[Path]:
    """Every file of the store, those in its folders too (segments, bells)."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def open_store():
    """A store folder under a directory every user may traverse, so only the
    store's own modes stand between another user and its files."""
    base = Path(tempfile.mkdtemp(prefix="dnpfs-store-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_another_local_user_reads_nothing_from_the_store(open_store):
    """A user whom the mount refuses does not get the pipe's bytes from the
    store's files instead (the WAL held them in plain text, mode 0644)."""
    store = open_store / "store" / "s.sqlite"
    m = Mount(open_store / "mnt", ["--store", str(store)], open_store / "mnt.log")
    m.start()
    try:
        os.mkfifo(m / "p")
        run(f"printf 'TOPSECRET line\\n' > {m/'p'}", shell=True)  # stored, not yet read
        refused = as_other(f"cat {m/'p'}")
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
        files = _store_files(store.parent)
        assert {p.name for p in files} >= {"s.sqlite", "s.sqlite.records", "s.sqlite-wal",
                                           "s.sqlite.records-wal"}
        assert any(p.parent.name == "s.sqlite.segments" for p in files)
        assert any(b"TOPSECRET" in p.read_bytes() for p in files), "the test reads the wrong files"
        assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o600)}
        assert store.parent.stat().st_mode & 0o777 == 0o700
        stranger = as_other(f"grep -ra TOPSECRET {store.parent}; cat {store.parent}/*")
        assert "TOPSECRET" not in stranger.stdout and "Permission denied" in stranger.stderr
        # The folder's mode is what we made; the files alone keep a stranger
        # out of a folder that others may enter (an existing /var/lib/dnpfs).
        store.parent.chmod(0o755)
        stranger = as_other(" ".join(f"cat {p};" for p in files))
        assert "TOPSECRET" not in stranger.stdout
        assert stranger.stderr.count("Permission denied") == len(files)
        log = open_store / "mnt.log"
        assert log.stat().st_mode & 0o777 == 0o600
    finally:
        m.stop()


def test_a_store_left_readable_by_an_earlier_run_is_made_private(open_store):
    store = open_store / "s.sqlite"
    for name in ("s.sqlite", "s.sqlite.records", "s.sqlite-wal"):
        (open_store / name).touch(mode=0o644)
        (open_store / name).chmod(0o644)
    folders = [open_store / "s.sqlite.segments", open_store / "s.sqlite.bells"]
    for folder in folders:  # and the files in them (a bell here)
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
    (folders[1] / "p").touch(mode=0o644)
    (folders[1] / "p").chmod(0o644)
    m = Mount(open_store / "mnt", ["--store", str(store)], open_store / "mnt.log").start()
    try:
        modes = {str(p.relative_to(open_store)): p.stat().st_mode & 0o777
                 for p in _store_files(open_store) if p.name != "mnt.log"}
        assert "s.sqlite.bells/p" in modes
        assert set(modes.values()) == {0o600}, modes
        assert {f.name: f.stat().st_mode & 0o777 for f in folders} == \
            {f.name: 0o700 for f in folders}
    finally:
        m.stop()


def test_store_files_follow_the_group_and_mode_the_mount_gives_pipes(open_store):
    """-o gid=G,mode=0640: group G may read the pipes through the mount, and
    the store's files the same way; others still nothing."""
    store = open_store / "store" / "s.sqlite"
    m = Mount(open_store / "mnt", ["--store", str(store)], open_store / "mnt.log",
              ["-o", f"allow_other,gid={GROUP},mode=0640"]).start()
    try:
        os.mkfifo(m / "p")
        run(f"printf 'group line\\n' > {m/'p'}", shell=True)
        for p in _store_files(store.parent):
            st = p.stat()
            assert (st.st_gid, st.st_mode & 0o777) == (GROUP, 0o640), p
        assert store.parent.stat().st_mode & 0o777 == 0o750
        member = as_other(f"cat {store} > /dev/null && echo readable", groups=[GROUP])
        assert member.stdout.strip() == "readable", member.stderr
        stranger = as_other(f"cat {store}")
        assert stranger.returncode != 0 and "Permission denied" in stranger.stderr
    finally:
        m.stop()

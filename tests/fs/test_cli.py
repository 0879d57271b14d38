"""`dnpfs mount` / `dnpfs umount` as a user runs them: exit codes and one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from ..conftest import DNPFS, ROOT
from ..util import mounted, run, spawn, wait_blocked


def dnpfs(*args, check=False, timeout=30):
    return subprocess.run([*DNPFS, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def one_line_error(result) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert lines[0].startswith("dnpfs: ")
    return lines[0]


def test_help_and_version():
    r = dnpfs("--help")
    assert r.returncode == 0 and "mount" in r.stdout and "umount" in r.stdout
    r = dnpfs("mount", "--help")
    assert r.returncode == 0 and "--store" in r.stdout and "--foreground" in r.stdout
    r = dnpfs("--version")
    assert r.returncode == 0 and r.stdout.startswith("dnpfs ")


def test_background_mount_returns_when_ready_and_umount(tmp_path):
    mp, store = tmp_path / "mnt", tmp_path / "s" / "store.sqlite"
    mp.mkdir()
    r = dnpfs("mount", "--store", store, mp)
    try:
        assert r.returncode == 0, r.stderr
        assert mounted(mp)
        os.mkfifo(mp / "jobs")  # answers right away: the mount was ready
        run(f"echo hello > {mp/'jobs'}", shell=True)
        assert run(["cat", str(mp / "jobs")]).stdout == b"hello\n"
        assert (tmp_path / "s" / "store.log").exists()
    finally:
        r = dnpfs("umount", mp)
    assert r.returncode == 0, r.stderr
    assert not mounted(mp)


def test_the_daemon_runs_on_jemalloc_unless_told_otherwise(tmp_path):
    """docs/decisions.md: jemalloc reads backlogs 1.6-2x faster; DNPFS_MALLOC=system
    keeps glibc's malloc, and a name that is not installed is one warning."""
    env = {k: v for k, v in os.environ.items() if k != "DNPFS_MALLOC"}
    for choice, expected in ((None, "jemalloc"), ("system", "system"), ("nosuch", "system")):
        mp, log = tmp_path / f"mnt-{choice}", tmp_path / f"{choice}.log"
        mp.mkdir()
        r = subprocess.run([*DNPFS, "mount", "--store", tmp_path / "s.sqlite", "--log-file", log,
                            mp], capture_output=True, text=True, timeout=30, cwd=ROOT,
                           env=env if choice is None else {**env, "DNPFS_MALLOC": choice})
        try:
            assert r.returncode == 0, r.stderr
            if choice == "nosuch":
                assert r.stderr == ("dnpfs: DNPFS_MALLOC=nosuch: libnosuch not found,"
                                    " using the system malloc\n")
            else:
                assert r.stderr == ""
            pid = int(os.getxattr(mp, "user.dnpfs.pid"))
            maps = open(f"/proc/{pid}/maps").read()
            assert ("libjemalloc" in maps) == (expected == "jemalloc")
            assert f"(malloc: {expected})" in log.read_text()
            pipe = mp / f"p-{choice}"  # one store: pipes outlive a mount
            os.mkfifo(pipe)
            run(f"head -c 3000000 /dev/urandom | tee {tmp_path/'sent'} > {pipe}", shell=True)
            got = run(["head", "-c", "3000000", str(pipe)]).stdout
            assert got == (tmp_path / "sent").read_bytes()
        finally:
            assert dnpfs("umount", mp).returncode == 0


def test_mount_errors_are_one_clear_line(tmp_path, make_mount):
    store = tmp_path / "s" / "store.sqlite"
    assert "does not exist" in one_line_error(dnpfs("mount", "--store", store, tmp_path / "missing"))

    full = tmp_path / "full"
    full.mkdir()
    (full / "file").write_text("x")
    assert "not empty" in one_line_error(dnpfs("mount", "--store", store, full))

    m = make_mount(["--store", str(store)])
    assert "already mounted" in one_line_error(dnpfs("mount", "--store", store, m.path))

    ro = tmp_path / "ro"
    ro.mkdir()
    (tmp_path / "mp").mkdir()
    run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(ro)])
    try:
        err = one_line_error(dnpfs("mount", "--store", ro / "store.sqlite", tmp_path / "mp"))
        assert "store" in err and "Read-only" in err
    finally:
        run(["umount", str(ro)])

    assert "not mounted" in one_line_error(dnpfs("umount", tmp_path / "mp"))
    inside = one_line_error(dnpfs("mount", "--store", tmp_path / "mp" / "s.sqlite", tmp_path / "mp"))
    assert "inside the mountpoint" in inside


def test_no_dev_fuse_is_one_clear_line(tmp_path):
    mp = tmp_path / "mp"
    mp.mkdir()
    # A private mount namespace whose /dev has no fuse device.
    cmd = (f"mount -t tmpfs tmpfs /dev && cd {ROOT} && "
           f"{' '.join(DNPFS)} mount --store {tmp_path/'s.sqlite'} {mp}")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd],
                       capture_output=True, text=True, timeout=30)
    assert "/dev/fuse" in one_line_error(r)


def test_stale_mount_of_killed_daemon_is_cleaned_up(make_mount, tmp_path):
    m = make_mount()
    os.mkfifo(m / "p")
    run(f"printf kept > {m/'p'}", shell=True)
    m.kill()
    with pytest.raises(OSError):
        os.listdir(m.path)  # ENOTCONN: the stale mount
    m.start()
    # The record is there; its session's END may not be (see docs/semantics.md).
    assert run(["head", "-c", "4", str(m / "p")]).stdout == b"kept"


def test_umount_works_while_readers_are_blocked(tmp_path):
    mp, store = tmp_path / "mnt", tmp_path / "s" / "store.sqlite"
    mp.mkdir()
    assert dnpfs("mount", "--store", store, mp).returncode == 0
    os.mkfifo(mp / "p")
    cats = [spawn(["cat", str(mp / "p")]) for _ in range(3)]
    for c in cats:
        wait_blocked(c)
    start = time.monotonic()
    r = dnpfs("umount", mp)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start < 5
    assert not mounted(mp)
    for c in cats:
        assert c.wait(5) == 0, "blocked readers get EOF"


def test_sigterm_flushes_wakes_readers_and_unmounts(make_mount):
    m = make_mount()
    os.mkfifo(m / "p")
    cat = spawn(["cat", str(m / "p")])
    wait_blocked(cat)
    w = open(m / "p", "wb", buffering=0)
    w.write(b"handed over")
    start = time.monotonic()
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(10) == 0
    assert time.monotonic() - start < 5
    assert not mounted(m.path)
    out, _ = cat.communicate(timeout=5)
    assert cat.returncode == 0
    try:
        w.close()
    except OSError:
        pass
    # What the writer handed over was stored: the next mount delivers it.
    m.proc = None
    m.start()
    got = out + run(["dd", f"if={m/'p'}", "iflag=nonblock", "status=none"], check=False).stdout
    assert got == b"handed over"

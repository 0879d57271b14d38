"""Creating, listing and deleting pipes; the FIFO trap; calls a pipe cannot honour."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import time

import pytest

from ..util import run, wait_for


def test_mkfifo_creates_a_pipe_that_reaches_the_daemon(make_mount):
    a = make_mount(name="a")
    b = make_mount(name="b")
    r = run(["mkfifo", str(a / "jobs")])
    assert r.returncode == 0
    st = os.stat(a / "jobs")
    # Reported as a regular file so every open/read/write reaches dnpfs.
    assert stat.S_ISREG(st.st_mode)
    assert run(["ls", "-l", str(a / "jobs")]).stdout.startswith(b"-rw")
    assert run(["test", "-p", str(a / "jobs")], check=False).returncode == 1
    # Data crosses daemons: it went through the store, not the kernel's pipe code.
    run(f"printf crossed > {a/'jobs'}", shell=True)
    assert run(["cat", str(b / "jobs")]).stdout == b"crossed"


def test_mknod_and_o_creat_create_pipes(mount):
    os.mknod(mount / "viamknod", 0o644 | stat.S_IFREG)
    run(f"echo x > {mount/'viaredirect'}", shell=True)
    with open(mount / "viapython", "wb") as f:
        f.write(b"y")
    assert sorted(os.listdir(mount.path)) == ["viamknod", "viapython", "viaredirect"]
    assert run(["cat", str(mount / "viaredirect")]).stdout == b"x\n"
    with pytest.raises(OSError) as e:
        os.mknod(mount / "dev", 0o644 | stat.S_IFCHR, os.makedev(1, 3))
    assert e.value.errno == errno.EPERM
    with pytest.raises(FileExistsError):
        os.mkfifo(mount / "viamknod")


def test_o_trunc_and_truncate_drop_nothing(mount):
    os.mkfifo(mount / "p")
    run(f"printf one > {mount/'p'}", shell=True)
    run(f"printf two > {mount/'p'}", shell=True)  # > is O_TRUNC
    os.truncate(mount / "p", 0)
    run(["truncate", "-s", "0", str(mount / "p")])
    assert run(["cat", str(mount / "p")]).stdout == b"one"
    assert run(["cat", str(mount / "p")]).stdout == b"two"
    with pytest.raises(OSError) as e:
        os.truncate(mount / "p", 10)
    assert e.value.errno == errno.EINVAL


def test_pipe_created_elsewhere_appears_within_a_second(make_mount):
    a = make_mount(name="a")
    b = make_mount(name="b")
    os.listdir(b.path)
    os.mkfifo(a / "new")
    start = time.monotonic()
    wait_for(lambda: "new" in os.listdir(b.path), 1.0, what="the pipe on the other mount")
    wait_for(lambda: os.path.exists(b / "new"), 1.0 - (time.monotonic() - start), what="lookup")
    os.unlink(b / "new")
    wait_for(lambda: not os.path.exists(a / "new"), 1.0, what="the unlink on the other mount")


@pytest.mark.parametrize("name", ["has space", "sl@sh@2", "ü", "x" * 250, "a:b", "*"])
def test_names_kafka_cannot_carry_are_einval(mount, name):
    with pytest.raises(OSError) as e:
        os.mkfifo(mount / name)
    assert e.value.errno == errno.EINVAL
    assert os.listdir(mount.path) == []


def test_longest_valid_name(mount):
    os.mkfifo(mount / ("n" * 249))
    assert os.listdir(mount.path) == ["n" * 249]


def test_unsupported_calls_get_clear_errnos(mount):
    os.mkfifo(mount / "p")
    cases = {
        "mkdir": (lambda: os.mkdir(mount / "d"), errno.EPERM),
        "rename": (lambda: os.rename(mount / "p", mount / "q"), errno.ENOTSUP),
        "link": (lambda: os.link(mount / "p", mount / "q"), errno.ENOTSUP),
        "symlink": (lambda: os.symlink("p", mount / "q"), errno.ENOTSUP),
        "chown": (lambda: os.chown(mount / "p", 1, 1), errno.EPERM),
        "chmod": (lambda: os.chmod(mount / "p", 0o600), errno.EPERM),
        "utime": (lambda: os.utime(mount / "p", (1, 1)), errno.EPERM),
        "rdwr": (lambda: os.open(mount / "p", os.O_RDWR), errno.EINVAL),
        "setxattr": (lambda: os.setxattr(mount / "p", "user.x", b"1"), errno.ENOTSUP),
        "rmdir": (lambda: os.rmdir(mount / "p"), errno.ENOTDIR),
    }
    for what, (call, code) in cases.items():
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == code, f"{what}: {e.value}"
    with open(mount / "p", "rb") as f:
        assert _mmap_errno(f.fileno()) in (errno.ENODEV, errno.EINVAL, errno.EACCES)
        with pytest.raises(OSError) as e:
            os.lseek(f.fileno(), 10, os.SEEK_SET)
        assert e.value.errno == errno.ESPIPE
    # The daemon is still fine.
    run(f"printf ok > {mount/'p'}", shell=True)
    assert run(["cat", str(mount / "p")]).stdout == b"ok"


def _mmap_errno(fd: int) -> int:
    """mmap(2) itself (Python's mmap refuses a 0-byte file before asking)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    addr = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    assert addr in (None, ctypes.c_void_p(-1).value), "mmap of a pipe succeeded"
    return ctypes.get_errno()


def test_unlink_of_missing_pipe_and_of_a_group(mount):
    with pytest.raises(FileNotFoundError):
        os.unlink(mount / "missing")
    os.mkfifo(mount / "p")
    run(f"printf 'a' > {mount/'p'}; printf 'b' > {mount/'p'}", shell=True)
    assert run(["cat", str(mount / "p@g")]).stdout == b"a"
    os.unlink(mount / "p@g")  # forgets the group's position
    assert run(["cat", str(mount / "p@g")]).stdout == b"a"

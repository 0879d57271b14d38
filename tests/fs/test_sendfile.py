"""Readers that use sendfile(2) or splice(2) instead of read(): busybox
`cat`, pv, Python's shutil.copyfile.  docs/semantics.md ("sendfile and
splice") says what works on which kernel and why."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time

import pytest

from ..util import run, spawn, wait_blocked

BUSYBOX = shutil.which("busybox")
PV = shutil.which("pv")
needs_busybox = pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed")


def _write(path, data: bytes) -> None:
    with open(path, "wb", buffering=0) as w:
        w.write(data)


@needs_busybox
def test_busybox_cat_into_a_file_blocks_then_gets_every_byte(mount, tmp_path):
    """sendfile into a regular file fails with EINVAL on a pipe of dnpfs, and
    busybox falls back to read(): it blocks on the empty pipe, then gets the
    bytes and EOF like GNU cat."""
    os.mkfifo(mount / "p")
    out = tmp_path / "out"
    with open(out, "wb") as f:
        cat = subprocess.Popen([BUSYBOX, "cat", str(mount / "p")], stdout=f)
    wait_blocked(cat)
    _write(mount / "p", b"through busybox\n")
    assert cat.wait(5) == 0
    assert out.read_bytes() == b"through busybox\n"


def test_shutil_copyfile_blocks_then_copies_the_pipe(mount, tmp_path):
    """shutil.copyfile tries sendfile first; it fails at once, and the copy
    falls back to read(), blocking until a writer's data and EOF."""
    os.mkfifo(mount / "p")
    out = tmp_path / "out"
    copier = threading.Thread(target=shutil.copyfile, args=(mount / "p", out))
    copier.start()
    time.sleep(0.5)
    assert copier.is_alive(), "copyfile took an empty pipe for EOF"
    _write(mount / "p", b"copied\n")
    copier.join(5)
    assert not copier.is_alive()
    assert out.read_bytes() == b"copied\n"


@pytest.mark.skipif(PV is None, reason="pv is not installed")
def test_pv_reads_the_pipe(mount):
    """pv tries splice(2); it gets 0 at once and goes on with read()."""
    os.mkfifo(mount / "p")
    pv = spawn([PV, "-q", str(mount / "p")])
    wait_blocked(pv)
    _write(mount / "p", b"through pv\n")
    out, _ = pv.communicate(timeout=5)
    assert out == b"through pv\n"


@needs_busybox
def test_busybox_cat_into_a_pipe_blocks_then_gets_every_byte(mount):
    """Into a pipe, sendfile went through the kernel's page cache, which
    took the pipe's size (0) for EOF: busybox printed nothing and exited 0.
    Now sendfile fails with EINVAL and busybox reads."""
    os.mkfifo(mount / "p")
    cat = spawn(f"{BUSYBOX} cat {mount / 'p'} | cat", shell=True)
    wait_blocked(cat)
    _write(mount / "p", b"into a pipe\n")
    out, err = cat.communicate(timeout=5)
    assert (out, cat.returncode) == (b"into a pipe\n", 0), err


@needs_busybox
def test_busybox_cat_right_after_writes_on_the_same_mount_loses_nothing(mount):
    """A write raises the size the kernel holds to the writer's offset until
    the next stat; a sendfile then had the page cache read records for it,
    and what lay past that size was taken from the pipe and never shown."""
    os.mkfifo(mount / "p")
    with open(mount / "p", "wb", buffering=0) as short, \
            open(mount / "p", "wb", buffering=0) as long:
        short.write(b"ab\n")
        long.write(b"x" * 5000 + b"\n")
    got = run(f"timeout 5 {BUSYBOX} cat {mount / 'p'} | cat", shell=True).stdout
    assert got == b"ab\n" + b"x" * 5000 + b"\n"


@needs_busybox
def test_a_writer_with_o_trunc_gets_through_to_a_busybox_reader(mount):
    """A read filling the page cache for sendfile held a page lock while it
    waited for data, and `echo x > pipe` (O_TRUNC) waited for that lock: the
    writer could not write what the reader waited for."""
    os.mkfifo(mount / "p")
    _write(mount / "p", b"first\n")  # the kernel's size of the pipe: 6 until a stat
    cat = spawn(f"{BUSYBOX} cat {mount / 'p'} {mount / 'p'} | cat", shell=True)
    wait_blocked(cat)
    run(f"timeout 5 bash -c 'echo second > {mount / 'p'}'", shell=True)
    out, err = cat.communicate(timeout=5)
    assert out == b"first\nsecond\n", err


@needs_busybox
def test_busybox_cat_started_beside_an_o_trunc_writer_gets_the_lines_every_time(mount):
    """`echo x > pipe` and busybox `cat pipe` started together, as Alpine
    scripts do.  With the kernel's atomic O_TRUNC, the writer's open set the
    size to 0, and a cat that sendfile()d in that moment met end of file and
    printed nothing (seen in 1 of 3 to 30 tries); O_TRUNC now reaches the
    daemon as setattr, whose answer keeps the size."""
    for i in range(40):
        pipe = mount / f"p{i}"
        os.mkfifo(pipe)
        writer = subprocess.Popen(["bash", "-c", f"printf 'l1\\nl2\\n' > {pipe}"])
        got = run(["bash", "-c", f"{BUSYBOX} cat {pipe}"], timeout=20).stdout
        writer.wait(10)
        assert got == b"l1\nl2\n", f"try {i}: {got!r}"
        os.unlink(pipe)


def test_splice_from_a_pipe_fails_with_einval_and_read_still_works(mount):
    """splice(2) cannot be served like read() on this kernel (docs/semantics.md);
    EINVAL is what splice users take as "use read()"."""
    os.mkfifo(mount / "p")
    _write(mount / "p", b"spliced\n")
    fd = os.open(mount / "p", os.O_RDONLY)
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as e:
            os.splice(fd, w, 4096)
        assert e.value.errno == errno.EINVAL
        assert os.read(fd, 100) == b"spliced\n"
    finally:
        for f in (fd, r, w):
            os.close(f)


@pytest.mark.parametrize("tool", [["wc", "-c"], ["tail", "-c", "4"]])
def test_tools_that_trust_the_size_read_the_pipe_instead(mount, tool):
    """Pipes report a size above 0 (for sendfile, above); tools that take a
    file's size from stat must still read the pipe (GNU wc -c printed 1 for
    a size of 1)."""
    os.mkfifo(mount / "p")
    _write(mount / "p", b"twelve bytes")
    got = run(["timeout", "5", *tool, str(mount / "p")]).stdout
    assert got.split()[0] == {"wc": b"12", "tail": b"ytes"}[tool[0]]

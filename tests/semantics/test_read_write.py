"""Writes, reads, EOF: what `cat`, `printf`, `dd` and Python see, across two mounts."""

from __future__ import annotations

import errno
import hashlib
import os
import select
import threading
import time

import pytest

from ..kafka.admin import whole_records
from ..util import run, spawn, wait_blocked, wait_for


def mkfifo(m, name="p"):
    os.mkfifo(m / name)
    return name


def read_all(path, timeout=20):
    return run(["cat", str(path)], timeout=timeout).stdout


def test_printf_then_cat_on_other_mount(mounts):
    a, b = mounts
    mkfifo(a)
    run(f"printf 'NOW: ' > {a/'p'}; printf 'then\\n' > {a/'p'}", shell=True)
    # Two sessions, both closed: cat gets the first one's bytes and its EOF.
    assert read_all(b / "p") == b"NOW: "
    assert read_all(b / "p") == b"then\n"


def test_cat_blocks_until_data_and_returns_what_is_there(mounts):
    a, b = mounts
    mkfifo(a)
    fd = os.open(b / "p", os.O_RDONLY)  # open never blocks
    try:
        got = []
        t = threading.Thread(target=lambda: got.append(os.read(fd, 65536)))
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), "read returned with nothing written"
        with open(a / "p", "wb", buffering=0) as w:
            w.write(b"hi")
            t.join(5)
            assert got == [b"hi"], "read should return the 2 bytes without waiting to fill 64 KiB"
    finally:
        os.close(fd)


def test_open_for_read_never_blocks(mount):
    mkfifo(mount)
    start = time.monotonic()
    fd = os.open(mount / "p", os.O_RDONLY)
    os.close(fd)
    assert time.monotonic() - start < 1.0


def test_partial_read_leaves_rest_in_pipe(mounts, backend_args):
    a, b = mounts
    mkfifo(a)
    run(f"printf hello > {a/'p'}", shell=True)
    out = run(["dd", f"if={b/'p'}", "bs=3", "count=1", "status=none"]).stdout
    assert out == b"hel"
    # Kafka's share group acknowledges whole records: the record goes back
    # whole (docs/semantics.md, "Work queues").
    assert read_all(a / "p") == (b"hello" if "--kafka" in backend_args
                                 and whole_records(backend_args) else b"lo")


def test_nonblocking_read_of_empty_pipe_is_eagain(mount):
    mkfifo(mount)
    fd = os.open(mount / "p", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError) as e:
            os.read(fd, 100)
        assert e.value.errno == errno.EAGAIN
    finally:
        os.close(fd)


def test_close_returns_after_data_is_stored(mounts):
    """After close() on A returns, a reader on B finds the bytes without waiting."""
    a, b = mounts
    mkfifo(a)
    for i in range(20):
        payload = f"record {i}\n".encode()
        with open(a / "p", "wb", buffering=0) as w:
            w.write(payload)
        fd = os.open(b / "p", os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.read(fd, 100) == payload
        finally:
            os.close(fd)


def test_o_sync_write_is_stored_when_write_returns(mounts):
    a, b = mounts
    mkfifo(a)
    wfd = os.open(a / "p", os.O_WRONLY | os.O_SYNC)
    rfd = os.open(b / "p", os.O_RDONLY | os.O_NONBLOCK)
    try:
        for i in range(10):
            os.write(wfd, b"x%d" % i)
            assert os.read(rfd, 100) == b"x%d" % i
    finally:
        os.close(wfd)
        os.close(rfd)


def test_fsync_makes_data_visible_on_other_mount(mounts):
    a, b = mounts
    mkfifo(a)
    with open(a / "p", "wb", buffering=0) as w:
        w.write(b"abc")
        os.fsync(w.fileno())
        fd = os.open(b / "p", os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.read(fd, 100) == b"abc"
        finally:
            os.close(fd)


# -- EOF ---------------------------------------------------------------------

def test_empty_session_wakes_blocked_reader_with_eof(mounts):
    a, b = mounts
    mkfifo(a)
    cat = spawn(["cat", str(b / "p")])
    wait_blocked(cat)
    run(f": > {a/'p'}", shell=True)
    out, _ = cat.communicate(timeout=5)
    assert cat.returncode == 0 and out == b""


def test_eof_sticks_to_the_handle_and_next_open_continues(mounts):
    a, b = mounts
    mkfifo(a)
    run(f"printf one > {a/'p'}", shell=True)
    fd = os.open(b / "p", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"one"
        assert os.read(fd, 100) == b""
        run(f"printf two > {a/'p'}", shell=True)
        assert os.read(fd, 100) == b"", "a handle that saw EOF keeps returning 0"
    finally:
        os.close(fd)
    assert read_all(b / "p") == b"two"


def test_overlapping_sessions_end_in_one_eof_after_the_last(mounts):
    a, b = mounts
    mkfifo(a)
    cat = spawn(["cat", str(b / "p")])
    w1 = open(a / "p", "wb", buffering=0)
    w2 = open(b / "p", "wb", buffering=0)
    w1.write(b"x")
    w1.close()
    time.sleep(0.5)
    assert cat.poll() is None, "EOF came while a second writer was still open"
    w2.write(b"y")
    w2.close()
    out, _ = cat.communicate(timeout=5)
    assert out == b"xy" and cat.returncode == 0


def test_now_date_against_cat_loop_as_on_local_fifo(mounts):
    a, b = mounts
    mkfifo(a)
    loop = spawn(f"while true; do cat {b/'p'}; done", shell=True, start_new_session=True)
    try:
        time.sleep(0.3)
        run(f"printf 'NOW: ' > {a/'p'}; date +%s > {a/'p'}", shell=True)
        out = wait_for(lambda: _peek(loop, b"\n"), timeout=5, what="the date line")
        assert out.startswith(b"NOW: ") and out[5:-1].isdigit(), out
    finally:
        os.killpg(loop.pid, 9)
        loop.wait()


_peeked: dict[int, bytes] = {}


def _peek(proc, until: bytes) -> bytes | None:
    """Non-blocking accumulate of *proc*'s stdout until *until* appears."""
    buf = _peeked.get(proc.pid, b"")
    fd = proc.stdout.fileno()
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    _peeked[proc.pid] = buf
    return buf if until in buf else None


# -- writes ------------------------------------------------------------------

def test_each_write_is_one_record_packet_mode(mounts):
    a, b = mounts
    mkfifo(a)
    with open(a / "p", "wb", buffering=0) as w:
        for part in (b"ab", b"cde", b"f"):
            w.write(part)
    fd = os.open(b / "p", os.O_RDONLY | os.O_DIRECT)
    try:
        assert [os.read(fd, 4096) for _ in range(4)] == [b"ab", b"cde", b"f", b""]
    finally:
        os.close(fd)


def test_packet_mode_keeps_rest_of_a_long_record(mount):
    mkfifo(mount)
    with open(mount / "p", "wb", buffering=0) as w:
        w.write(b"0123456789")
        w.write(b"next")
    fd = os.open(mount / "p", os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.read(fd, 4) == b"0123"
        assert os.read(fd, 100) == b"456789"
        assert os.read(fd, 100) == b"next"
    finally:
        os.close(fd)


def test_pipe_buf_writes_are_never_interleaved(mounts):
    a, b = mounts
    mkfifo(a)
    writers = []
    for i, m in enumerate((a, b, a, b)):
        letter = bytes([ord("A") + i])
        cmd = f"for n in $(seq 50); do printf '%.0s{letter.decode()}' $(seq 4096); done"
        # One printf per block: each is one write() of exactly 4096 bytes.
        writers.append(spawn(f"exec > {m/'p'}; {cmd}", shell=True))
    reader = spawn(["cat", str(b / "p")])
    for w in writers:
        assert w.wait(60) == 0, w.stderr.read()
    out = b""
    deadline = time.monotonic() + 30
    while len(out) < 4 * 50 * 4096 and time.monotonic() < deadline:
        out += _drain(reader)
    reader.kill()
    assert len(out) == 4 * 50 * 4096
    for at in range(0, len(out), 4096):
        block = out[at : at + 4096]
        assert block == block[:1] * 4096, f"block at {at} is interleaved"


def _drain(proc) -> bytes:
    fd = proc.stdout.fileno()
    if select.select([fd], [], [], 0.5)[0]:
        return os.read(fd, 1 << 20)
    return b""


# -- several readers ---------------------------------------------------------

def test_default_group_readers_share_records(mounts):
    a, b = mounts
    mkfifo(a)
    readers = [spawn(["cat", str(m / "p")]) for m in (a, b)]
    for r in readers:
        wait_blocked(r)
    lines = [f"rec-{i:04d}\n".encode() for i in range(300)]
    with open(a / "p", "wb", buffering=0) as w:
        for line in lines:
            w.write(line)
            if len(lines) % 7 == 0:
                time.sleep(0.001)
    # One reader gets the EOF and exits; the other is still blocked: end it.
    wait_for(lambda: any(r.poll() is not None for r in readers), 10, what="one reader's EOF")
    time.sleep(0.5)
    outs = []
    for r in readers:
        if r.poll() is None:
            r.terminate()
        outs.append(r.communicate(timeout=5)[0])
    got = b"".join(outs).splitlines(keepends=True)
    assert sorted(got) == lines, "each record goes to exactly one reader"


@pytest.mark.parametrize("bs", [100, 1])
def test_competing_dd_readers_on_two_daemonized_mounts_get_every_byte_once(mounts, bs, tmp_path):
    """Two daemons started as users start them (`dnpfs mount`, forked into the
    background) and a `dd` reading on each: every byte written goes to exactly
    one of them.  Found as a newcomer would: the daemon's identity was taken
    before the fork, so each mount took the other's reads for a dead daemon's
    and handed them out again (272,479 bytes read of 54,893 written)."""
    a, b = mounts
    mkfifo(a)
    lines = 2000 if bs > 1 else 200
    data = b"".join(f"line {i:05d} of the competing readers test\n".encode()
                    for i in range(lines))
    # Into files: a reader stopped on a full stdout pipe would hold bytes it read.
    outs = [tmp_path / f"out-{m.path.name}" for m in (a, b)]
    readers = [spawn(f"exec dd if={m / 'p'} bs={bs} status=none > {out}", shell=True)
               for m, out in zip((a, b), outs)]
    for r in readers:
        wait_blocked(r)
    with open(a / "p", "wb", buffering=0) as w:
        for at in range(0, len(data), 4096):
            w.write(data[at:at + 4096])
    wait_for(lambda: any(r.poll() is not None for r in readers), 60, what="one reader's EOF")
    wait_for(lambda: sum(out.stat().st_size for out in outs) >= len(data), 10,
             what="every byte written to be read")
    time.sleep(0.5)  # time for more than that to arrive, if it would
    for r in readers:
        if r.poll() is None:  # blocked in read(): a reader that gets no EOF
            r.terminate()
        r.communicate(timeout=10)
    got = b"".join(out.read_bytes() for out in outs)
    assert len(got) == len(data), f"{len(got)} bytes read of {len(data)} written"
    assert sorted(got) == sorted(data)


def test_named_group_gets_its_own_copy(mounts):
    a, b = mounts
    mkfifo(a)
    run(f"printf 'one\\n' > {a/'p'}; printf 'two\\n' > {a/'p'}", shell=True)
    assert read_all(b / "p") == b"one\n"  # the default group consumed "one"
    # A new group starts at the oldest retained record: it sees "one" too.
    assert read_all(b / "p@audit") == b"one\n"
    assert read_all(a / "p@audit") == b"two\n"
    assert read_all(a / "p") == b"two\n"
    assert read_all(a / "p@other") == b"one\n"


def test_group_path_is_not_listed_and_needs_a_pipe(mount):
    mkfifo(mount)
    assert os.listdir(mount.path) == ["p"]
    assert os.path.exists(mount / "p@g")
    assert not os.path.exists(mount / "nope@g")


# -- poll / select / epoll ---------------------------------------------------

def test_select_and_epoll_report_readability_truthfully(mounts):
    a, b = mounts
    mkfifo(a)
    fd = os.open(b / "p", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert select.select([fd], [], [], 0.3)[0] == []
        ep = select.epoll()
        ep.register(fd, select.EPOLLIN)
        assert ep.poll(0.3) == []
        w = open(a / "p", "wb", buffering=0)
        w.write(b"ready")
        start = time.monotonic()
        assert ep.poll(5) == [(fd, select.EPOLLIN)]
        assert time.monotonic() - start < 2
        assert select.select([fd], [], [], 1)[0] == [fd]
        assert os.read(fd, 100) == b"ready"
        assert select.select([fd], [], [], 0.3)[0] == []
        w.close()  # EOF pending: readable, and read returns 0
        assert select.select([fd], [], [], 5)[0] == [fd]
        assert os.read(fd, 100) == b""
        ep.close()
    finally:
        os.close(fd)


# -- binary safety -----------------------------------------------------------

@pytest.mark.parametrize("size", [1, 4095, 4097, 1 << 20, 64 << 20])
def test_any_bytes_arrive_unchanged(mounts, tmp_path, size):
    a, b = mounts
    mkfifo(a)
    src = tmp_path / "src.bin"
    data = os.urandom(size // 2) + bytes(size - size // 2)  # random, then NULs
    src.write_bytes(data)
    run(["dd", f"if={src}", f"of={a/'p'}", "bs=64k", "status=none"], timeout=120)
    out = run(["cat", str(b / "p")], timeout=120).stdout
    assert hashlib.sha256(out).hexdigest() == hashlib.sha256(data).hexdigest()
    assert len(out) == size


# -- unlink --------------------------------------------------------------------

def test_unlink_gives_blocked_reader_eof_and_writer_an_error(mounts):
    a, b = mounts
    mkfifo(a)
    cat = spawn(["cat", str(b / "p")])
    wait_blocked(cat)
    w = open(b / "p", "wb", buffering=0)
    w.write(b"gone with the pipe")
    os.unlink(a / "p")
    out, _ = cat.communicate(timeout=5)
    assert cat.returncode == 0
    assert not os.path.exists(a / "p")
    wait_for(lambda: not os.path.exists(b / "p"), 2, what="unlink seen on the other mount")
    with pytest.raises(OSError) as e:
        w.write(b"more")
        w.close()
    assert e.value.errno == errno.EPIPE


def test_one_gib_stream_arrives_unchanged(mounts):
    """1 GiB of varied bytes (NULs and invalid UTF-8 included) from a Python
    writer on A to `cat | sha256sum` on B."""
    a, b = mounts
    mkfifo(a)
    reader = spawn(f"cat {b/'p'} | sha256sum", shell=True)
    writer = (
        "import hashlib, os, sys\n"
        "block = os.urandom(1 << 20) + bytes(4096) + b'\\xff\\xfe'\n"
        "h = hashlib.sha256()\n"
        f"with open({str(a / 'p')!r}, 'wb', buffering=0) as f:\n"
        "    sent = 0\n"
        "    while sent < (1 << 30):\n"
        "        chunk = block[sent % 4099 : sent % 4099 + min(1 << 20, (1 << 30) - sent)]\n"
        "        f.write(chunk); h.update(chunk); sent += len(chunk)\n"
        "print(h.hexdigest())\n"
    )
    w = run(["python3", "-c", writer], timeout=600)
    out, err = reader.communicate(timeout=600)
    assert out.split()[0] == w.stdout.split()[0], err


def test_killed_writer_ends_its_session(mounts):
    """kill -9 of a writing process: the kernel closes its file, the session
    ends, and a blocked reader gets the data, then EOF."""
    a, b = mounts
    mkfifo(a)
    cat = spawn(["cat", str(b / "p")])
    writer = spawn(f"exec > {a/'p'}; printf 'last words'; sleep 60", shell=True)
    out = wait_for(lambda: _peek(cat, b"last words"), 5, what="the writer's data")
    writer.kill()
    writer.wait()
    rest, _ = cat.communicate(timeout=5)
    assert cat.returncode == 0 and out + rest == b"last words"


def test_removing_a_group_with_readers_open_is_ebusy(mounts):
    a, b = mounts
    mkfifo(a)
    run(f"printf x > {a/'p'}", shell=True)
    fd = os.open(a / "p@g", os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 10) == b"x"  # the group has a position now
        with pytest.raises(OSError) as e:
            os.unlink(a / "p@g")
        assert e.value.errno == errno.EBUSY
    finally:
        os.close(fd)

    def removed():  # the reader's release reaches the daemon just after close()
        try:
            os.unlink(a / "p@g")
            return True
        except OSError as e:
            assert e.errno == errno.EBUSY
            return False

    wait_for(removed, 5, interval=0.1, what="the group to be removable")

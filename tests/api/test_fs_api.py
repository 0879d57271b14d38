"""Filesystem handlers called directly (no FUSE) over the memory and SQLite
stores: what each syscall answers, and the errno of each failure."""

from __future__ import annotations

import errno
import os
import select
import stat
import subprocess
import time

import pyfuse3
import trio

from dnpfs.fs import STAT_XATTR, STATUS_XATTR

from .conftest import CTX, Ctx, fails

ROOT = pyfuse3.ROOT_INODE


async def mkfifo(fs, name: bytes) -> int:
    await fs.mknod(ROOT, name, stat.S_IFIFO | 0o644, 0, CTX)
    return (await fs.lookup(ROOT, name, CTX)).st_ino


async def open_(fs, name: bytes, flags: int) -> int:
    ino = (await fs.lookup(ROOT, name, CTX)).st_ino
    return (await fs.open(ino, flags, CTX)).fh


async def write_all(fs, name: bytes, *chunks: bytes) -> None:
    fh = await open_(fs, name, os.O_WRONLY)
    for chunk in chunks:
        assert await fs.write(fh, 0, chunk) == len(chunk)
    await fs.flush(fh)
    await fs.release(fh)


async def read_to_eof(fs, fh: int, size: int = 1 << 16) -> bytes:
    out = b""
    while piece := bytes(await fs.read(fh, 0, size)):
        out += piece
    return out


def test_mkfifo_answers_a_fifo_and_lookup_then_a_regular_file(run_fs):
    async def body(fs):
        attr = await fs.mknod(ROOT, b"jobs", stat.S_IFIFO | 0o644, 0, CTX)
        assert stat.S_ISFIFO(attr.st_mode) and attr.entry_timeout == 0
        found = await fs.lookup(ROOT, b"jobs", CTX)
        assert stat.S_ISREG(found.st_mode) and found.st_ino != attr.st_ino
        assert stat.S_ISREG((await fs.getattr(found.st_ino, CTX)).st_mode)
        assert stat.S_ISDIR((await fs.getattr(ROOT, CTX)).st_mode)
    run_fs(body)


def test_head_and_tail_get_a_node_of_their_own(run_fs):
    """A seeking tool's lookup answers its own node of the pipe: seekable,
    its size how far its handles read (0 before), whoever asks; the shared
    node says 4096 to everyone.  The kernel keeps one size per node, so
    tail's lseek(SEEK_END) no longer meets another process's 4096
    (dnpfs/nodes.py).  Forgotten when the kernel gives back its lookups."""
    tail = subprocess.Popen(["tail", "-f", "/dev/null"])  # a real process named tail
    try:
        deadline = time.monotonic() + 10
        while open(f"/proc/{tail.pid}/comm").read() != "tail\n":  # until it ran exec
            assert time.monotonic() < deadline
            time.sleep(0.01)
        tool = Ctx(pid=tail.pid)

        async def body(fs):
            await mkfifo(fs, b"jobs")
            await write_all(fs, b"jobs", b"l1\nl2\n")
            mine = await fs.lookup(ROOT, b"jobs", tool)
            shared = await fs.lookup(ROOT, b"jobs", CTX)
            assert mine.st_ino != shared.st_ino
            assert (await fs.lookup(ROOT, b"jobs", tool)).st_ino == mine.st_ino
            assert (mine.st_size, shared.st_size) == (0, 4096)
            fi = await fs.open(mine.st_ino, os.O_RDONLY, tool)
            assert bytes(await fs.read(fi.fh, 0, 4)) == b"l1\nl"
            assert (await fs.getattr(mine.st_ino, CTX)).st_size == 4
            assert (await fs.getattr(shared.st_ino, tool)).st_size == 4096
            # a seekable handle (tail -c +N): a read further on drops the bytes between
            assert bytes(await fs.read(fi.fh, 5, 1 << 16)) == b"\n"
            await fs.release(fi.fh)
            other = await fs.open(shared.st_ino, os.O_RDONLY | os.O_NONBLOCK, tool)
            await fails(errno.EAGAIN, fs.read(other.fh, 0, 1 << 16))
            await fs.release(other.fh)

            await fs.forget([(mine.st_ino, 1)])
            assert (await fs.getattr(mine.st_ino, tool)).st_ino == mine.st_ino  # one lookup held
            await fs.forget([(mine.st_ino, 1)])
            assert (await fs.lookup(ROOT, b"jobs", tool)).st_ino not in (mine.st_ino, shared.st_ino)
            await fails(errno.ENOENT, fs.getattr(mine.st_ino, tool))
        run_fs(body)
    finally:
        tail.kill()
        tail.wait()


def test_mkfifo_of_an_existing_pipe_is_eexist(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        await fails(errno.EEXIST, fs.mknod(ROOT, b"jobs", stat.S_IFIFO | 0o644, 0, CTX))
    run_fs(body)


def test_bad_names_are_einval_to_create_and_enoent_to_look_up(run_fs):
    async def body(fs):
        for name in (b"..", b"__x", b"a" * 250, "é".encode()):
            await fails(errno.EINVAL, fs.mknod(ROOT, name, stat.S_IFIFO | 0o644, 0, CTX))
            await fails(errno.ENOENT, fs.lookup(ROOT, name, CTX))
    run_fs(body)


def test_a_group_of_a_missing_pipe_is_enoent(run_fs):
    async def body(fs):
        await fails(errno.ENOENT, fs.mknod(ROOT, b"nope@g", stat.S_IFIFO | 0o644, 0, CTX))
        await fails(errno.ENOENT, fs.lookup(ROOT, b"nope@g", CTX))
        # rm nope@g: SQLite answered EPIPE here, Kafka ENOENT (docs/semantics.md: ENOENT)
        await fails(errno.ENOENT, fs.unlink(ROOT, b"nope@g", CTX))
    run_fs(body)


def test_rm_of_a_missing_group_of_an_existing_pipe_is_enoent(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        await fails(errno.ENOENT, fs.unlink(ROOT, b"jobs@never", CTX))
    run_fs(body)


def test_what_is_written_is_read_once_then_eof(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        reader = await open_(fs, b"jobs", os.O_RDONLY)
        await write_all(fs, b"jobs", b"hello ", b"world\n")
        assert await read_to_eof(fs, reader) == b"hello world\n"
        await fs.release(reader)
    run_fs(body)


def test_a_page_cache_read_is_einval_and_takes_nothing(run_fs):
    """The kernel's own reads for splice and sendfile come without a lock
    owner: EINVAL at once (tools fall back to read()), and the bytes stay for
    the process's own read()."""
    async def body(fs):
        await mkfifo(fs, b"jobs")
        reader = await open_(fs, b"jobs", os.O_RDONLY)
        await write_all(fs, b"jobs", b"kept\n")
        fs.read_lock_owner = lambda: 0
        await fails(errno.EINVAL, fs.read(reader, 0, 4096))
        fs.read_lock_owner = lambda: 1
        assert await read_to_eof(fs, reader) == b"kept\n"
        await fs.release(reader)
    run_fs(body)


def test_a_blocked_read_wakes_when_a_writer_writes(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        reader = await open_(fs, b"jobs", os.O_RDONLY)
        got = []

        async def read():
            got.append(bytes(await fs.read(reader, 0, 100)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.2)
            assert got == []  # blocked: no writer yet
            await write_all(fs, b"jobs", b"late")
        assert got == [b"late"]
    run_fs(body)


def test_a_nonblocking_read_with_nothing_is_eagain(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        reader = await open_(fs, b"jobs", os.O_RDONLY | os.O_NONBLOCK)
        await fails(errno.EAGAIN, fs.read(reader, 0, 100))
    run_fs(body)


def test_read_write_open_is_einval_and_the_root_eisdir(run_fs):
    async def body(fs):
        ino = await mkfifo(fs, b"jobs")
        await fails(errno.EINVAL, fs.open(ino, os.O_RDWR, CTX))
        await fails(errno.EISDIR, fs.open(ROOT, os.O_RDONLY, CTX))
    run_fs(body)


def test_a_handle_of_the_wrong_kind_is_ebadf(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        writer = await open_(fs, b"jobs", os.O_WRONLY)
        await fails(errno.EBADF, fs.read(writer, 0, 10))
        await fails(errno.EBADF, fs.read(999, 0, 10))
        await fails(errno.EBADF, fs.write(999, 0, b"x"))
        await fs.release(writer)
    run_fs(body)


def test_what_the_flat_directory_refuses(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        await fails(errno.EPERM, fs.mkdir(ROOT, b"d", 0o755, CTX))
        await fails(errno.ENOTDIR, fs.rmdir(ROOT, b"jobs", CTX))
        await fails(errno.ENOTSUP, fs.rename(ROOT, b"jobs", ROOT, b"other", 0, CTX))
        await fails(errno.ENOTSUP, fs.symlink(ROOT, b"s", b"jobs", CTX))
        await fails(errno.EPERM, fs.mknod(ROOT, b"dev", stat.S_IFCHR | 0o644, 0, CTX))
    run_fs(body)


def test_unlink_removes_the_pipe_and_a_second_unlink_is_enoent(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        await fs.unlink(ROOT, b"jobs", CTX)
        await fails(errno.ENOENT, fs.lookup(ROOT, b"jobs", CTX))
        await fails(errno.ENOENT, fs.unlink(ROOT, b"jobs", CTX))
    run_fs(body)


def test_unlink_gives_a_blocked_reader_eof_and_the_writer_epipe(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        reader = await open_(fs, b"jobs", os.O_RDONLY)
        writer = await open_(fs, b"jobs", os.O_WRONLY)
        got = []

        async def read():
            got.append(bytes(await fs.read(reader, 0, 100)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.1)
            await fs.unlink(ROOT, b"jobs", CTX)
        assert got == [b""]
        await fails(errno.EPIPE, fs.write(writer, 0, b"x"))
        await fs.release(writer)
    run_fs(body)


def test_a_group_gets_every_record_and_cannot_be_removed_while_read(run_fs):
    async def body(fs):
        await mkfifo(fs, b"jobs")
        audit = await open_(fs, b"jobs@audit", os.O_RDONLY | os.O_NONBLOCK)
        plain = await open_(fs, b"jobs", os.O_RDONLY | os.O_NONBLOCK)
        await write_all(fs, b"jobs", b"rec")
        assert bytes(await fs.read(plain, 0, 100)) == b"rec"
        assert bytes(await fs.read(audit, 0, 100)) == b"rec"
        await fails(errno.EBUSY, fs.unlink(ROOT, b"jobs@audit", CTX))
        await fs.release(audit)
        await fs.unlink(ROOT, b"jobs@audit", CTX)
        await fs.release(plain)
    run_fs(body)


def test_poll_says_readable_only_when_a_read_would_answer(run_fs):
    async def body(fs):
        ino = await mkfifo(fs, b"jobs")
        reader = await open_(fs, b"jobs", os.O_RDONLY)
        writer = await open_(fs, b"jobs", os.O_WRONLY)
        assert await fs.poll(ino, reader, None, CTX) == 0
        assert await fs.poll(ino, writer, None, CTX) & select.POLLOUT
        await fs.write(writer, 0, b"x")
        await fs.flush(writer)
        assert await fs.poll(ino, reader, None, CTX) & select.POLLIN
        await fs.release(writer)
    run_fs(body)


def test_create_makes_the_pipe_and_opens_it_for_writing(run_fs):
    async def body(fs):
        fi, attr = await fs.create(ROOT, b"new", stat.S_IFREG | 0o644,
                                   os.O_WRONLY | os.O_CREAT, CTX)
        assert stat.S_ISREG(attr.st_mode)
        await fs.write(fi.fh, 0, b"made")
        await fs.release(fi.fh)
        reader = await open_(fs, b"new", os.O_RDONLY)
        assert await read_to_eof(fs, reader) == b"made"
    run_fs(body)


def test_xattrs_show_the_pipe_and_the_mount(run_fs):
    async def body(fs):
        ino = await mkfifo(fs, b"jobs")
        await write_all(fs, b"jobs", b"12345")
        names = await fs.listxattr(ino, CTX)
        assert STAT_XATTR in names
        assert await fs.getxattr(ino, b"user.dnpfs.records", CTX) == b"1"
        assert await fs.getxattr(ino, b"user.dnpfs.bytes", CTX) == b"5"
        await fails(pyfuse3.ENOATTR, fs.getxattr(ino, b"user.nope", CTX))
        status = await fs.getxattr(ROOT, STATUS_XATTR, CTX)
        assert b'"pipes": 1' in status and b'"health": "ok"' in status
        await fails(errno.ENOTSUP, fs.setxattr(ino, b"user.x", b"1", CTX))
    run_fs(body)


def test_a_pipe_written_on_one_mount_is_read_on_another(run_fs):
    async def body(one, two):
        await mkfifo(one, b"jobs")
        reader = await open_(two, b"jobs", os.O_RDONLY)
        await write_all(one, b"jobs", b"across")
        assert await read_to_eof(two, reader) == b"across"
    run_fs(body, mounts=2)


def test_readers_on_two_mounts_share_the_default_group(run_fs):
    async def body(one, two):
        await mkfifo(one, b"jobs")
        readers = [(fs, await open_(fs, b"jobs", os.O_RDONLY | os.O_DIRECT)) for fs in (one, two)]
        writer = await open_(one, b"jobs", os.O_WRONLY)
        sent = [f"{i:02d}".encode() for i in range(40)]
        for s in sent:
            await one.write(writer, 0, s)
        await one.flush(writer)
        got = []
        for fs, fh in readers * 40:
            try:
                got.append(bytes(await fs.read(fh, 0, 2)))  # O_DIRECT: a record a read
            except pyfuse3.FUSEError:
                pass
            if len(got) == len(sent):
                break
        assert sorted(got) == sent
        await one.release(writer)
    run_fs(body, mounts=2)

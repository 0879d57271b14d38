"""Whole records to competing readers (issue #28, item 1), with the pipe
layer called directly over the memory and SQLite stores, two mounts each:
once a handle took the first byte of a record, the rest is that handle's;
closed part way, the rest goes back to the group, delivered first."""

from __future__ import annotations

import trio


async def _one(reader, size=1) -> bytes:
    return b"".join(await reader.read(size))


async def _written(pipes, *lines: bytes):
    writer = await pipes.open_writer("jobs", 0, False)
    for line in lines:
        await writer.write(line)
    await writer.flush()
    return writer


def test_competing_byte_reads_never_split_a_record(run_fs):
    async def body(fs1, fs2):
        await fs1.pipes.create("jobs")
        a = await fs1.pipes.open_reader("jobs", "", 0, False, False)
        b = await fs2.pipes.open_reader("jobs", "", 0, False, False)
        writer = await _written(fs1.pipes, b"one\n", b"two\n", b"six\n")
        # Interleaved 1-byte reads, as three bash `read`s would do them.
        got = {a: b"", b: b""}
        for reader in [a, b, a, a, b, b, a, b]:
            got[reader] += await _one(reader)
        assert got[a] == b"one\n" and got[b] == b"two\n"
        assert await _one(a, 100) == b"six\n"
        await fs1.pipes.close_writer(writer)
        await fs1.pipes.close_reader(a)
        await fs2.pipes.close_reader(b)
    run_fs(body, mounts=2)


def test_a_reader_closed_part_way_gives_the_rest_back_first(run_fs):
    async def body(fs1, fs2):
        await fs1.pipes.create("jobs")
        a = await fs1.pipes.open_reader("jobs", "", 0, False, False)
        b = await fs2.pipes.open_reader("jobs", "", 0, False, False)
        writer = await _written(fs1.pipes, b"first\n", b"second\n")
        assert await _one(a, 2) == b"fi"
        await fs1.pipes.close_reader(a)
        with trio.fail_after(10):
            assert await _one(b, 100) == b"rst\n"  # before the next record
            assert await _one(b, 100) == b"second\n"
        info = await fs2.pipes.describe("jobs")
        assert info["groups"][""]["backlog_bytes"] == 0
        await fs1.pipes.close_writer(writer)
        assert await b.read(100) == ()  # EOF as before: the writer closed
        await fs2.pipes.close_reader(b)
    run_fs(body, mounts=2)


def test_one_byte_reader_gets_the_writers_order_and_eof(run_fs):
    async def body(fs):
        pipes = fs.pipes
        await pipes.create("jobs")
        reader = await pipes.open_reader("jobs", "", 0, False, False)
        writer = await _written(pipes, b"ab", b"cd", b"e")
        await pipes.close_writer(writer)
        out = b""
        while byte := await _one(reader):
            out += byte
        assert out == b"abcde"
        await pipes.close_reader(reader)
    run_fs(body)


def test_other_groups_still_get_every_byte(run_fs):
    async def body(fs1, fs2):
        await fs1.pipes.create("jobs")
        a = await fs1.pipes.open_reader("jobs", "", 0, False, False)
        audit = await fs2.pipes.open_reader("jobs", "audit", 0, False, False)
        writer = await _written(fs1.pipes, b"xyz")
        assert await _one(a) == b"x"
        assert await _one(audit, 100) == b"xyz"
        assert await _one(a, 100) == b"yz"
        await fs1.pipes.close_writer(writer)
        await fs1.pipes.close_reader(a)
        await fs2.pipes.close_reader(audit)
    run_fs(body, mounts=2)


def test_poll_sees_a_rest_given_back_by_another_reader(run_fs):
    async def body(fs1, fs2):
        await fs1.pipes.create("jobs")
        a = await fs1.pipes.open_reader("jobs", "", 0, False, False)
        b = await fs2.pipes.open_reader("jobs", "", 0, True, False)
        writer = await _written(fs1.pipes, b"only\n")
        assert await _one(a) == b"o"
        assert not await b.readable()  # the one record is a's
        await fs1.pipes.close_reader(a)
        with trio.fail_after(10):
            while not await b.readable():
                await trio.sleep(0.05)
        assert await _one(b, 100) == b"nly\n"
        await fs1.pipes.close_writer(writer)
        await fs2.pipes.close_reader(b)
    run_fs(body, mounts=2)

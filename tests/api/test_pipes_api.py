"""The pipe layer (``Pipes``) called directly over the memory and SQLite
stores: leases, status, shutdown; what the filesystem layer builds on."""

from __future__ import annotations

import pytest
import trio

from dnpfs.errors import NoSuchPipe, ShuttingDown
from dnpfs.model import Kind, Record


def test_a_silent_mounts_session_is_ended_and_its_reader_gets_eof(run_fs):
    # Liveness: the store knows every mount's last heartbeat; mount "dead0000"
    # never sent one, so once the lease runs out its session gets an END.
    async def body(fs):
        pipes = fs.pipes
        await pipes.create("jobs")
        reader = await pipes.open_reader("jobs", "", 0, False, False)
        await pipes.backend.append("jobs", [Record(Kind.BEGIN, "dead0000.1"),
                                            Record(Kind.DATA, "dead0000.1", b"last words")])
        assert b"".join(await reader.read(100)) == b"last words"
        with trio.fail_after(10):
            assert await reader.read(100) == ()  # EOF, not a reader waiting forever
        await pipes.close_reader(reader)
    run_fs(body, session_timeout=0.4)


def test_a_live_writers_session_is_not_ended(run_fs):
    async def body(fs):
        pipes = fs.pipes
        await pipes.create("jobs")
        writer = await pipes.open_writer("jobs", 0, False)
        reader = await pipes.open_reader("jobs", "", 0, False, False)
        await writer.write(b"alive")
        assert b"".join(await reader.read(100)) == b"alive"
        with trio.move_on_after(1.5) as waited:  # several lease rounds of 0.4 s
            await reader.read(100)
        assert waited.cancelled_caught  # still blocked: its writer is alive
        await pipes.close_writer(writer)
        assert await reader.read(100) == ()
    run_fs(body, session_timeout=0.4)


def test_describe_counts_records_groups_and_handles(run_fs):
    async def body(fs):
        pipes = fs.pipes
        await pipes.create("jobs")
        reader = await pipes.open_reader("jobs", "audit", 0, True, False)
        writer = await pipes.open_writer("jobs", 0, False)
        await writer.write(b"abc")
        await writer.flush()
        info = await pipes.describe("jobs")
        assert (info["records"], info["bytes"], info["writers_here"]) == (1, 3, 1)
        assert info["groups"]["audit"]["readers_here"] == 1
        assert info["groups"]["audit"]["backlog_bytes"] == 3
        assert "membership" not in info["groups"]["audit"]  # not a Membership store
        with pytest.raises(NoSuchPipe):
            await pipes.describe("nope")
        await pipes.close_writer(writer)
        await pipes.close_reader(reader)
    run_fs(body)


def test_opening_a_missing_pipe_is_no_such_pipe(run_fs):
    async def body(fs):
        with pytest.raises(NoSuchPipe):
            await fs.pipes.open_writer("nope", 0, False)
        with pytest.raises(NoSuchPipe):
            await fs.pipes.open_reader("nope", "", 0, False, False)
        with pytest.raises(NoSuchPipe):
            await fs.pipes.delete("nope")
    run_fs(body)


def test_shutdown_gives_blocked_readers_eof_and_refuses_new_work(run_fs):
    async def body(fs):
        pipes = fs.pipes
        await pipes.create("jobs")
        reader = await pipes.open_reader("jobs", "", 0, False, False)
        writer = await pipes.open_writer("jobs", 0, False)
        got = []

        async def read():
            got.append(await reader.read(100))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(0.1)
            await pipes.shutdown(5)
        assert got == [()]
        with pytest.raises(ShuttingDown):
            await pipes.open_writer("jobs", 0, False)
        with pytest.raises(ShuttingDown):
            await pipes.create("other")
        assert writer.closed
    run_fs(body)

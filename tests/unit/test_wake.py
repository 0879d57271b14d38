"""The embedded store's bell (dnpfs/backends/sqlite/_wake.py): a daemon that
committed wakes the others sharing the store, instead of their next poll."""

from __future__ import annotations

import time

import trio

from dnpfs.access import FileAccess
from dnpfs.backends.sqlite import SqliteBackend
from dnpfs.backends.sqlite._wake import Wake
from dnpfs.model import Kind, Record


def test_a_ring_wakes_a_waiter_on_the_same_store_at_once(tmp_path):
    store = tmp_path / "s.sqlite"

    async def main():
        a, b = Wake(store, FileAccess()), Wake(store, FileAccess())
        assert b.available, "inotify is missing on this machine"
        await b.wait(0)  # nothing rang yet: returns at the timeout
        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.wait, 10.0)
            await trio.sleep(0.05)
            a.ring()
        took = time.monotonic() - start - 0.05
        a.close()
        b.close()
        b.close()  # idempotent
        a.ring()  # after close: nothing, no error
        return took

    assert trio.run(main) < 1.0, "the waiter slept to its timeout: the ring was not heard"


def test_a_pipes_bell_names_the_pipe_and_the_catalogs_does_not(tmp_path):
    """A waiter learns which pipes got records straight from the event, so it
    can wake their readers without looking in the store first."""
    store = tmp_path / "s.sqlite"

    async def main():
        a, b = Wake(store, FileAccess()), Wake(store, FileAccess())
        assert b.available, "inotify is missing on this machine"
        a.ring(["jobs", "logs.app-1"])
        with trio.fail_after(5):
            pipes = await b.wait(10.0)
        a.ring()
        with trio.fail_after(5):
            catalog = await b.wait(10.0)
        a.forget("jobs")  # deleted, then made again: its new bell still rings
        a.ring(["jobs"])
        with trio.fail_after(5):
            again = await b.wait(10.0)
        idle = await b.wait(0.05)
        a.close()
        b.close()
        return pipes, catalog, again, idle

    pipes, catalog, again, idle = trio.run(main)
    assert (pipes.pipes, pipes.catalog) == ({"jobs", "logs.app-1"}, False)
    assert (catalog.pipes, catalog.catalog) == (set(), True)
    assert again.pipes == {"jobs"}
    assert not idle, "nothing rang: the wait ends at its timeout, empty"


def test_a_second_daemon_hears_of_an_append_before_its_safety_poll(tmp_path):
    """Two backends on one store stand for two daemons: the second learns of
    the first one's append from the bell, well before its 100 ms poll."""
    store = tmp_path / "s.sqlite"

    async def main():
        heard: list[tuple[str | None, float]] = []
        async with trio.open_nursery() as nursery:
            a, b = SqliteBackend(store), SqliteBackend(store)
            await a.start(nursery, lambda name, gone=False: None)
            await b.start(nursery, lambda name, gone=False: heard.append((name, time.monotonic())))
            await a.create_pipe("p")
            await trio.sleep(0.3)
            heard.clear()
            delays = []
            for i in range(20):
                start = time.monotonic()
                await a.append("p", [Record(Kind.DATA, "s", b"x")], durable=False)
                with trio.fail_after(5):
                    while not any(name == "p" for name, _ in heard):
                        await trio.sleep(0.0005)
                delays.append(min(t for name, t in heard if name == "p") - start)
                heard.clear()
                await trio.sleep(0.2)  # past the safety poll: each look is the bell's
            await a.close()
            await b.close()
            nursery.cancel_scope.cancel()
        return sorted(delays)[len(delays) // 2]

    median = trio.run(main)
    assert median < 0.02, f"median {median * 1000:.1f} ms: the bell was not heard"

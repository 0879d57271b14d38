"""The store contract (dnpfs/backends/base.py), written once and run against
every store: memory (the reference), SQLite and Kafka.  A store is correct
when this suite passes; where stores disagreed, the contract's answer is
the one asserted here.

Each test drives backends directly under trio, as pipes.py and reader.py do;
``opener()`` starts one more backend on the same store (one more mount).

Two kinds of group, two kinds of test.  A *cursor group* has a cursor to
fetch, commit (compare-and-swap) and resume at: a named group (``pipe@g``)
on every store, and the default group where the store has no ``Holds`` for
it.  The rules of the cursor are tested on a named group, through
``fetch``/``commit``/``consume``.  A pipe's *default group* may have no
cursor at all (Kafka's share group: records are acquired, not looked at),
so its rules (what readers get: order, each record once across readers and
mounts, EOF, what is given back, what is set aside) are tested through
``Reader``, which reads as reader.py does: ``consume_held`` where the store
holds what the group's handles take, else ``consume``.  Kafka hands a
group's records to a mount once it joined the group, so reads that expect
records wait for them (``settle``, ``read_all``'s *expect*).
"""

from __future__ import annotations

import itertools

import pytest
import trio

from dnpfs.backends.base import MAX_DELIVERIES, Fetched, Holds, Liveness
from dnpfs.delivery import ReaderView, take
from dnpfs.errors import NoSuchPipe, StoreError
from dnpfs.model import Cursor, Held, Kind, Record

from .conftest import BACKENDS

# Tests of what only the stores that have it offer (retention, a closed
# store's errors) name their stores here instead of skipping the others.
LOCAL = ["memory"] + [b for b in ("sqlite",) if b in BACKENDS]
# The default group (a share group on Kafka) and a named group (a cursor
# group on every store): rules that hold for both run on both.
GROUPS = pytest.mark.parametrize("group", ["", "g"], ids=["default", "named"])


def data(payload: bytes, session: str | None = "m.1") -> Record:
    return Record(Kind.DATA, session, payload)


async def settle(backend, name, group="g", count=1, timeout=20.0) -> Fetched:
    """Fetch a cursor group until at least *count* records are at hand."""
    with trio.fail_after(timeout):
        while True:
            fetched = await backend.fetch(name, group, 1 << 20)
            records = list(fetched.records)
            if len(records) >= count:
                return Fetched(fetched.cursor, records)
            await trio.sleep(0.02)


async def read(backend, name, group="g", size=1 << 20, view=ReaderView()):
    """One read of a cursor group through its cursor: ``consume`` and
    delivery.take."""
    def decide(fetched):
        taken = take(fetched.cursor, fetched.records, size, view=view)
        return taken.cursor, taken

    return await backend.consume(name, group, size, decide)


_holders = itertools.count()


class Reader:
    """One reader handle, reading as reader.py does: where the store holds
    what the group's handles take (``Holds.holds``), through
    ``consume_held`` with whole records, the rest of a record kept here and
    ``settle`` before asking for more; elsewhere through ``consume``."""

    def __init__(self, backend, name: str, group: str = "", horizon: int = 0) -> None:
        self.backend = backend
        self.name = name
        self.group = group
        self.whole = isinstance(backend, Holds) and backend.holds(name, group)
        self.view = ReaderView(horizon)
        self.held: Held | None = None
        self.offered: list = []  # every record a read was offered (StoredRecord)
        self.id = f"reader{next(_holders)}"  # the holder: any hashable object

    async def read(self, size: int = 1 << 20, blocking: bool = False):
        """(bytes, eof) of one read(): b"" and False when nothing is there."""
        if self.held is not None:
            chunk, rest = self.held.data[:size], self.held.data[size:]
            held = self.held
            self.held = Held(held.offset, held.start + len(chunk), held.session, rest) \
                if rest else None
            return chunk, False
        view = self.view

        def decide(fetched):
            records = list(fetched.records)
            self.offered.extend(records)
            taken = take(fetched.cursor, records, size, view=view, whole=self.whole)
            return taken.cursor, taken

        if self.whole:
            self.backend.settle(self.id)
            taken = await self.backend.consume_held(self.id, self.name, self.group,
                                                    max(size, 1 << 16), decide, blocking)
        else:
            taken = await self.backend.consume(self.name, self.group, size, decide, blocking)
        self.view = taken.view
        self.held = taken.held
        return taken.data, taken.eof

    async def look(self) -> str:
        """One read whose decision moves nothing."""
        def decide(fetched):
            self.offered.extend(fetched.records)
            return fetched.cursor, "looked"

        if self.whole:
            return await self.backend.consume_held(self.id, self.name, self.group, 1 << 16,
                                                   decide)
        return await self.backend.consume(self.name, self.group, 1 << 16, decide)

    async def read_all(self, expect: int | None = None, timeout: float = 20.0) -> bytes:
        """Every byte the group has for this reader (*expect* bytes at least)."""
        out = b""
        with trio.fail_after(timeout):
            while True:
                chunk, _ = await self.read()
                out += chunk
                if not chunk and (expect is None or len(out) >= expect):
                    return out
                if not chunk:
                    await trio.sleep(0.02)

    def close(self) -> None:
        """A normal close: what it took is done."""
        if self.whole:
            self.backend.settle(self.id)


async def read_all(backend, name, group="", expect=None, timeout=20.0) -> bytes:
    """What one new reader handle of *group* reads (*expect* bytes at least)."""
    reader = Reader(backend, name, group)
    try:
        return await reader.read_all(expect, timeout)
    finally:
        reader.close()


# -- pipes ------------------------------------------------------------------------

def test_create_is_true_once_and_the_pipe_is_listed(run_store):
    async def body(opener):
        b, _ = await opener()
        assert await b.list_pipes() == []
        assert await b.create_pipe("p") is True
        assert await b.create_pipe("p") is False
        assert await b.create_pipe("a") is True
        assert await b.list_pipes() == ["a", "p"]
        assert await b.pipe_exists("p") and not await b.pipe_exists("q")
    run_store(body)


def test_delete_is_true_once_and_the_pipe_is_gone(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.create_pipe("q")
        assert await b.delete_pipe("p") is True
        assert await b.delete_pipe("p") is False
        assert await b.delete_pipe("never") is False
        assert await b.list_pipes() == ["q"]
        assert not await b.pipe_exists("p")
    run_store(body)


def test_a_pipe_made_again_after_delete_starts_empty(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.append("p", [data(b"old")])
        await b.attach("p", "g")
        assert await read_all(b, "p", "g", expect=3) == b"old"
        await b.detach("p", "g")  # as pipes.py does when the readers close
        await b.delete_pipe("p")
        await b.create_pipe("p")
        await b.attach("p", "")
        await b.attach("p", "g")
        assert await read_all(b, "p", "") == b""
        assert await read_all(b, "p", "g") == b""
        await b.append("p", [data(b"new")])
        assert await read_all(b, "p", "g", expect=3) == b"new"
        assert await read_all(b, "p", "", expect=3) == b"new"
    run_store(body)


# -- records, as a cursor group fetches them -------------------------------------------

def test_appended_records_come_back_in_order_with_kind_and_session(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "g")
        sent = [Record(Kind.BEGIN, "m.1"), data(b"one"), data(b"", None), data(b"two", None),
                Record(Kind.END, "m.1")]
        await b.append("p", sent[:2])
        await b.append("p", sent[2:])
        got = (await settle(b, "p", count=len(sent))).records
        assert [(r.kind, r.session, r.data) for r in got] == \
            [(r.kind, r.session, r.data) for r in sent]
        offsets = [r.offset for r in got]
        assert offsets == sorted(set(offsets))
    run_store(body)


@GROUPS
def test_attach_returns_an_offset_no_later_record_is_below(run_store, group):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.append("p", [data(b"before")])
        horizon = await b.attach("p", group)
        await b.append("p", [data(b"after")])
        reader = Reader(b, "p", group, horizon)
        assert await reader.read_all(expect=11) == b"beforeafter"
        before, after = [r for r in reader.offered if r.kind is Kind.DATA]
        assert before.offset < horizon <= after.offset
    run_store(body)


def test_an_empty_durable_append_only_syncs(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.append("p", [], durable=True)
        await b.append("p", [data(b"x")], durable=False)
        await b.append("p", [], durable=True)
        await b.attach("p", "")
        assert await read_all(b, "p", expect=1) == b"x"
    run_store(body)


@GROUPS
def test_fetch_of_an_empty_pipe_returns_at_once(run_store, group):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", group)
        with trio.fail_after(10):
            fetched = await b.fetch("p", group, 100)
        assert list(fetched.records) == []
    run_store(body)


def test_fetch_returns_the_record_at_the_cursor_even_over_max_bytes(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "g")
        await b.append("p", [data(b"0123456789"), data(b"next")])
        await settle(b, "p", count=2)
        first = list((await b.fetch("p", "g", 4)).records)[0]
        assert first.length == 10 and first.start == 0
        assert b"0123456789".startswith(first.data) and first.data
    run_store(body)


def test_a_cursor_inside_a_record_fetches_its_rest(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "g")
        await b.append("p", [data(b"0123456789")])
        fetched = await settle(b, "p")
        inside = Cursor(fetched.records[0].offset, 3, frozenset({"m.1"}))
        assert await b.commit("p", "g", fetched.cursor, inside)
        again = await b.fetch("p", "g", 1 << 20)
        assert again.cursor == inside
        record = list(again.records)[0]
        # All of it (Kafka) or its rest (SQLite): model.StoredRecord.
        assert record.start <= 3 and record.length == 10
        assert record.data[3 - record.start:] == b"3456789"
    run_store(body)


@GROUPS
def test_a_large_record_round_trips(run_store, group):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", group)
        blob = bytes(range(256)) * 2048  # 512 KiB, under every store's record limit
        await b.append("p", [data(blob)])
        assert await read_all(b, "p", group, expect=len(blob)) == blob
    run_store(body)


# -- group cursors (a named group; the default group where it has one) -----------------

def test_a_new_group_starts_at_the_oldest_retained_record(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.append("p", [data(b"a"), data(b"b"), data(b"c")])
        await b.attach("p", "late")
        assert await read_all(b, "p", "late", expect=3) == b"abc"
    run_store(body)


def test_groups_consume_independently(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "")
        await b.attach("p", "audit")
        await b.append("p", [data(b"hello")])
        assert await read_all(b, "p", "", expect=5) == b"hello"
        assert await read_all(b, "p", "") == b""
        assert await read_all(b, "p", "audit", expect=5) == b"hello"
    run_store(body)


def test_commit_is_a_compare_and_swap(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "g")
        await b.append("p", [data(b"a"), data(b"b")])
        fetched = await settle(b, "p", count=2)
        start = fetched.cursor
        one = Cursor(fetched.records[1].offset, 0, frozenset({"m.1"}))
        assert await b.commit("p", "g", start, one) is True
        assert await b.commit("p", "g", start, Cursor(fetched.records[0].offset, 1)) is False
        assert (await b.fetch("p", "g", 100)).cursor == one
        assert await b.cursor("p", "g") == one
    run_store(body)


def test_the_cursor_keeps_its_open_sessions(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "g")
        await b.append("p", [data(b"a")])
        fetched = await settle(b, "p", "g")
        new = Cursor(fetched.records[0].offset + 1, 0, frozenset({"m1.s1", "m2.s9"}))
        assert await b.commit("p", "g", fetched.cursor, new)
        assert (await b.fetch("p", "g", 10)).cursor == new
    run_store(body)


def test_the_default_groups_cursor_names_the_sessions_open_for_leases(run_store):
    # What dnpfs/leases.py asks of every group, a default group without a
    # cursor included (Kafka's share group answers from its ledger).
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "")
        await b.append("p", [Record(Kind.BEGIN, "m.7"), data(b"a", "m.7")])
        reader = Reader(b, "p")
        assert await reader.read_all(expect=1) == b"a"
        with trio.fail_after(20):
            while "m.7" not in (await b.cursor("p", "")).open_sessions:
                await trio.sleep(0.05)
    run_store(body)


@GROUPS
def test_a_read_that_decides_no_move_moves_nothing(run_store, group):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", group)
        await b.append("p", [data(b"stay")])
        reader = Reader(b, "p", group)
        with trio.fail_after(20):
            while not reader.offered:  # until the store offered the record
                assert await reader.look() == "looked"
        assert await reader.read_all(expect=4) == b"stay"
    run_store(body)


@GROUPS
def test_a_read_delivers_the_bytes_then_eof_after_the_writers_end(run_store, group):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        horizon = await b.attach("p", group)
        await b.append("p", [Record(Kind.BEGIN, "m.1"), data(b"bye"), Record(Kind.END, "m.1")])
        reader = Reader(b, "p", group, horizon)
        with trio.fail_after(20):
            while (got := await reader.read()) == (b"", False):
                await trio.sleep(0.02)
        assert got == (b"bye", False)
        with trio.fail_after(20):
            while (got := await reader.read()) == (b"", False):
                await trio.sleep(0.02)
        assert got == (b"", True)
    run_store(body)


def test_a_detached_group_resumes_at_its_committed_cursor(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "g")
        await b.append("p", [data(b"one")])
        assert await read_all(b, "p", "g", expect=3) == b"one"
        await b.detach("p", "g")
        await b.append("p", [data(b"two")])
        await b.attach("p", "g")
        assert await read_all(b, "p", "g", expect=3) == b"two"
    run_store(body)


def test_a_default_group_read_on_another_mount_goes_on_after_what_was_read(run_store):
    # The default group's rule where it has no cursor to resume at: what a
    # mount's readers consumed is not read again after they left.
    async def body(opener):
        a, _ = await opener()
        c, _ = await opener()
        await a.create_pipe("p")
        await a.attach("p", "")
        await a.append("p", [data(b"one")])
        assert await read_all(a, "p", expect=3) == b"one"
        await a.detach("p", "")
        await a.append("p", [data(b"two")])
        await c.attach("p", "")
        assert await read_all(c, "p", expect=3) == b"two"
    run_store(body)


def test_delete_group_is_true_once_and_the_group_starts_over(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "g")
        await b.append("p", [data(b"abc")])
        assert await read_all(b, "p", "g", expect=3) == b"abc"
        await b.detach("p", "g")
        assert await b.delete_group("p", "g") is True
        assert await b.delete_group("p", "g") is False
        await b.attach("p", "g")
        assert await read_all(b, "p", "g", expect=3) == b"abc"
    run_store(body)


# -- errors: every operation on a pipe the store does not have says NoSuchPipe --------

MISSING = {
    "append": lambda b: b.append("gone", [data(b"x")]),
    "attach": lambda b: b.attach("gone", ""),
    "fetch": lambda b: b.fetch("gone", "", 10),
    "consume": lambda b: b.consume("gone", "", 10, lambda f: (f.cursor, None)),
    "consume_held": lambda b: b.consume_held("h", "gone", "", 10, lambda f: (f.cursor, None)),
    "delete_group": lambda b: b.delete_group("gone", "g"),  # SQLite said EPIPE, Kafka False
    "stats": lambda b: b.stats("gone"),
}


@pytest.mark.parametrize("operation", sorted(MISSING))
def test_an_operation_on_a_missing_pipe_raises_no_such_pipe(run_store, operation):
    async def body(opener):
        b, _ = await opener()
        with pytest.raises(NoSuchPipe):
            await MISSING[operation](b)
    run_store(body)


@pytest.mark.parametrize("operation", ["append", "fetch", "consume", "consume_held"])
def test_an_operation_on_a_deleted_pipe_raises_no_such_pipe(run_store, operation):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("gone")
        await b.attach("gone", "")
        await b.append("gone", [data(b"x")])
        await b.delete_pipe("gone")
        with pytest.raises(NoSuchPipe):
            await MISSING[operation](b)
    run_store(body)


def test_detach_of_a_deleted_pipe_is_quiet_or_no_such_pipe(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "g")
        await b.delete_pipe("p")
        try:
            await b.detach("p", "g")
        except NoSuchPipe:
            pass  # pipes.close_reader accepts either
    run_store(body)


@pytest.mark.parametrize("store_kind", LOCAL)
def test_a_closed_store_refuses_work_with_a_store_error(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "")
        await b.close()
        with pytest.raises(StoreError):
            await Reader(b, "p").read()
    run_store(body)


# -- concurrency ------------------------------------------------------------------------

async def _read_until(readers, want: int, size: int, timeout: float = 60.0) -> list[bytes]:
    """What *readers* read, each in its own task, until *want* bytes came:
    a reader that finds nothing tries again (on Kafka another mount, or
    another handle's window, may have what it waits for)."""
    got: list[bytes] = []
    with trio.fail_after(timeout):
        async def run(reader):
            while sum(map(len, got)) < want:
                chunk, _ = await reader.read(size)
                if chunk:
                    got.append(chunk)
                else:
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            for reader in readers:
                nursery.start_soon(run, reader)
    for reader in readers:
        reader.close()
    return got


@GROUPS
def test_concurrent_readers_of_one_group_deliver_each_record_once(run_store, group):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", group)
        sent = [f"r{i:03d};".encode() for i in range(120)]
        await b.append("p", [data(x) for x in sent])
        got = await _read_until([Reader(b, "p", group) for _ in range(8)], 600, 5)
        assert sorted(b"".join(got).split(b";")) == sorted(b"".join(sent).split(b";"))
        assert await read_all(b, "p", group) == b""
    run_store(body)


@GROUPS
def test_readers_of_one_group_on_two_mounts_deliver_each_record_once(run_store, group):
    # On Kafka a named group is handed to one mount at a time
    # (tests/kafka/test_membership.py): the other's readers find nothing.
    async def body(opener):
        a, _ = await opener()
        c, _ = await opener()
        await a.create_pipe("p")
        for b in (a, c):
            await b.attach("p", group)
        sent = [f"{i:03d};".encode() for i in range(200)]
        await a.append("p", [data(x) for x in sent])
        got = await _read_until([Reader(b, "p", group) for b in (a, c, a, c)], 800, 4)
        assert sorted(got) == sent
    run_store(body)


def test_concurrent_appends_keep_each_writers_order(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "")

        async def writer(w):
            for i in range(20):
                await b.append("p", [data(f"{w}:{i};".encode(), f"m.{w}")], durable=i == 19)

        async with trio.open_nursery() as nursery:
            for w in range(6):
                nursery.start_soon(writer, w)
        text = (await read_all(b, "p", expect=6 * (10 * 4 + 10 * 5))).decode()
        items = [x.split(":") for x in text.split(";") if x]
        assert len(items) == 120
        for w in range(6):
            assert [int(i) for ww, i in items if ww == str(w)] == list(range(20))
    run_store(body)


def test_concurrent_creates_of_one_name_succeed_once(run_store):
    async def body(opener):
        a, _ = await opener()
        c, _ = await opener()
        results = []

        async def create(b):
            results.append(await b.create_pipe("p"))

        async with trio.open_nursery() as nursery:
            for b in (a, c, a, c):
                nursery.start_soon(create, b)
        assert sorted(results) == [False, False, False, True]
    run_store(body)


# -- change notification --------------------------------------------------------------

async def blocked(reader: Reader) -> None:
    """A blocking read that finds nothing, as reader.py's before it waits
    for ``on_change`` (a store that joins groups lazily has joined)."""
    assert await reader.read(blocking=True) == (b"", False)


@GROUPS
def test_an_append_notifies_its_own_mount_where_a_group_is_attached(run_store, group):
    async def body(opener):
        b, changes = await opener()
        await b.create_pipe("p")
        await b.attach("p", group)
        await blocked(Reader(b, "p", group))
        since = changes.mark()
        await b.append("p", [data(b"x")])
        await changes.wait_for("p", since)
    run_store(body)


def test_create_and_delete_notify_with_gone(run_store):
    async def body(opener):
        b, changes = await opener()
        since = changes.mark()
        await b.create_pipe("p")
        await changes.wait_for("p", since, gone=True)
        since = changes.mark()
        await b.delete_pipe("p")
        await changes.wait_for("p", since, gone=True)
    run_store(body)


@GROUPS
def test_an_append_on_one_mount_wakes_a_reader_on_another(run_store, group):
    async def body(opener):
        writer, _ = await opener()
        reader, changes = await opener()
        await writer.create_pipe("p")
        await reader.attach("p", group)
        handle = Reader(reader, "p", group)
        await blocked(handle)
        since = changes.mark()
        await writer.append("p", [data(b"wake")])
        await changes.wait_for("p", since, timeout=30)
        assert await handle.read_all(expect=4) == b"wake"
    run_store(body)


def test_a_delete_on_one_mount_is_noticed_on_another(run_store):
    async def body(opener):
        a, _ = await opener()
        c, changes = await opener()
        since = changes.mark()
        await a.create_pipe("p")
        # Seen there first: a store that polls may miss a pipe made and
        # deleted between two looks (no mount held it meanwhile).
        await changes.wait_for("p", since, gone=True, timeout=30)
        await c.attach("p", "")
        since = changes.mark()
        await a.delete_pipe("p")
        await changes.wait_for("p", since, gone=True, timeout=30)
        # What pipes.py then asks, to fail the pipe's open writers there (EPIPE).
        assert not await c.pipe_exists("p")
    run_store(body)


# -- status ------------------------------------------------------------------------------

def test_stats_count_what_is_retained_and_each_backlog_or_say_unknown(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "")
        await b.attach("p", "g")
        await b.append("p", [Record(Kind.BEGIN, "m.1"), data(b"abc"), data(b"de")])
        assert await read_all(b, "p", "g", expect=5) == b"abcde"
        stats = await b.stats("p")
        assert stats.records in (None, 2) and stats.bytes in (None, 5)
        # A group without a cursor (Kafka's share group) cannot tell its backlog.
        if "" in stats.groups:
            backlog = stats.groups[""].backlog_records, stats.groups[""].backlog_bytes
            assert backlog in ((2, 5), (None, None))
        if "g" in stats.groups:
            assert (stats.groups["g"].backlog_records, stats.groups["g"].backlog_bytes) == (0, 0)
        assert await b.health() == "ok"
    run_store(body)


def test_liveness_reports_each_mounts_heartbeat_to_every_mount(run_store):
    async def body(opener):
        a, _ = await opener()
        c, _ = await opener()
        if not isinstance(a, Liveness):  # a store may not offer it: then leases never expire
            assert not hasattr(a, "mount_ages")
            return
        await a.heartbeat("mount-a")
        with trio.fail_after(30):
            while "mount-a" not in (ages := await c.mount_ages()):
                await trio.sleep(0.1)
        assert 0 <= ages["mount-a"] < 30
    run_store(body)


# -- retention (the stores that apply it themselves; Kafka's broker does its own) -------

@pytest.mark.parametrize("store_kind", LOCAL)
def test_retention_removes_what_every_group_consumed_and_nothing_else(run_store):
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.attach("p", "")
        await b.attach("p", "g")
        await b.append("p", [data(b"a"), data(b"b")])
        assert await read_all(b, "p", "", expect=2) == b"ab"
        await b.apply_retention()  # "g" has read nothing: all stays
        assert (await b.stats("p")).records == 2
        assert await read_all(b, "p", "g", expect=2) == b"ab"
        await b.append("p", [data(b"c")])
        assert await b.apply_retention() == 2
        assert (await b.stats("p")).records == 1
        assert await read_all(b, "p", "", expect=1) == b"c"
    run_store(body)


def test_records_written_before_any_reader_are_kept_for_the_default_group(run_store):
    # Kafka: the broker's retention is by age; a share group starts at the
    # oldest record (_share.ShareReaders.attach), not at the log's end.
    async def body(opener):
        b, _ = await opener()
        await b.create_pipe("p")
        await b.append("p", [data(b"early")])
        if hasattr(b, "apply_retention"):
            assert await b.apply_retention() == 0
        await b.attach("p", "")
        assert await read_all(b, "p", expect=5) == b"early"
    run_store(body)


@pytest.mark.parametrize("store_kind", LOCAL)
def test_retention_removes_records_older_than_the_retention_age(run_store):
    async def body(opener):
        b, _ = await opener(retention_seconds=0.0)
        await b.create_pipe("p")
        await b.append("p", [data(b"old")])
        await trio.sleep(0.01)
        assert await b.apply_retention() == 1
        await b.attach("p", "new")
        assert await read_all(b, "p", "new") == b""
    run_store(body)


# -- Holds: what a reader of the default group took, kept until it is done ----------
# Every store holds for the default group (Kafka: where its share group reads,
# the default); memory and SQLite also for named groups.

def _one_byte(fetched):
    t = take(fetched.cursor, fetched.records, 1, whole=True)
    return t.cursor, t


async def _two_holds_mounts(opener):
    a, _ = await opener()
    b, _ = await opener()
    assert isinstance(a, Holds) and isinstance(b, Holds)
    await a.create_pipe("p")
    await a.attach("p", "")
    await b.attach("p", "")
    assert a.holds("p", "") and b.holds("p", "")
    await a.append("p", [Record(Kind.DATA, "s", b"hello"), Record(Kind.DATA, "s", b"next")])
    return a, b


async def _take_one(mount, holder, timeout=20.0):
    """The next read with bytes of *holder* on *mount* (a store that hands
    records to a mount once it joined finds none at first)."""
    with trio.fail_after(timeout):
        while not (taken := await mount.consume_held(holder, "p", "", 1 << 16, _one_byte)).size:
            await trio.sleep(0.02)
    return taken


def test_a_rest_given_back_is_the_groups_next_read_on_another_mount(run_store):
    async def body(opener):
        a, b = await _two_holds_mounts(opener)
        taken = await _take_one(a, "h1")
        assert taken.data == b"h" and taken.held.data == b"ello"
        await a.give_back("p", "", "h1", (taken.held.offset, 3))  # "hel" delivered
        got = await _take_one(b, "h2")
        # Its rest; or all of it, from a store that takes back whole records
        # only (Kafka acknowledges records, not bytes: docs/semantics.md).
        assert got.data + got.held.data in (b"lo", b"hello")
        b.settle("h2")
        after = await _take_one(b, "h2")
        assert after.data == b"n"
    run_store(body)


def test_all_a_holder_took_goes_back_whole_and_settled_never(run_store):
    async def body(opener):
        a, b = await _two_holds_mounts(opener)
        first = await _take_one(a, "h1")
        a.settle("h1")  # "hello" is done
        second = await _take_one(a, "h1")
        assert (first.data, second.data) == (b"h", b"n")
        await a.give_back("p", "", "h1", None)  # killed: all of "next" again
        got = await _take_one(b, "h2")
        assert got.data + got.held.data == b"next"
    run_store(body)


def test_what_went_out_max_deliveries_times_is_set_aside_and_listed(run_store):
    async def body(opener):
        a, b = await _two_holds_mounts(opener)
        for n in range(MAX_DELIVERIES):  # a job that kills each worker that takes it
            mount = (a, b)[n % 2]
            got = await _take_one(mount, f"h{n}")
            assert got.data + got.held.data == b"hello", n
            if n:
                assert (await mount.stats("p")).groups[""].redelivered == 1
            await mount.give_back("p", "", f"h{n}", None)
        # Listed where it was set aside at least (Kafka: only there; the
        # broker archives it and lists it nowhere).
        last = (a, b)[(MAX_DELIVERIES - 1) % 2]
        after = await _take_one(last, "h")
        assert after.data + after.held.data == b"next"
        stats = (await last.stats("p")).groups[""]
        assert stats.set_aside == 1
        (aside,) = await last.set_aside("p", "")
        assert (aside.data, aside.deliveries) == (b"hello", MAX_DELIVERIES)
    run_store(body)


@pytest.mark.parametrize("store_kind", LOCAL)
def test_a_named_group_holds_on_the_stores_that_can(run_store):
    # Memory and SQLite hold for every group (the Kafka named group is a
    # consumer group, which has a cursor and no holds).
    async def body(opener):
        a, _ = await opener()
        await a.create_pipe("p")
        await a.attach("p", "g")
        assert a.holds("p", "g")
        await a.append("p", [Record(Kind.DATA, "s", b"hello")])
        taken = await a.consume_held("h1", "p", "g", 1 << 16, _one_byte)
        await a.give_back("p", "g", "h1", (taken.held.offset, 3))
        assert await a.given_back("p", "g")
        assert await read_all(a, "p", "g", expect=2) == b"lo"
    run_store(body)

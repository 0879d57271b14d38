"""KafkaBackend driven directly under trio, against the real broker.

No mount and no mocks: each test starts one or two KafkaBackend instances (two
instances are two mounts) on the broker of scripts/kafka-dev, with a topic
prefix of its own, and calls the backend interface as pipes.py would.

Reader groups here are named ("g"): consumer groups with a cursor, what
fetch/commit/consume are about.  The default group is a share group on this
broker (tests/kafka/test_share.py, tests/semantics/test_queue.py).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from dnpfs.backends.kafka import KafkaBackend
from dnpfs.delivery import ReaderView, take
from dnpfs.errors import Busy, InvalidName, NoSuchPipe, StoreError
from dnpfs.model import Cursor, Kind, Record

pytestmark = pytest.mark.kafka

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
needs_kcat = pytest.mark.skipif(KCAT is None, reason="kcat is not installed")


def run(fn, *args, timeout=60):
    async def main():
        with trio.fail_after(timeout):
            return await fn(*args)

    return trio.run(main)


def unique_prefix() -> str:
    return f"dt{uuid.uuid4().hex[:8]}."


class Changes:
    """The on_change callback: remembers every name it was called with."""

    def __init__(self) -> None:
        self.names: list[str | None] = []
        self._event = trio.Event()

    def __call__(self, name: str | None, gone: bool = False) -> None:
        self.names.append(name)
        self._event.set()
        self._event = trio.Event()

    async def wait_for(self, name: str, since: int = 0) -> None:
        while name not in self.names[since:]:
            await self._event.wait()


@asynccontextmanager
async def mounted(bootstrap: str, prefix: str, **kw):
    """A started KafkaBackend (one mount) and its change log."""
    changes = Changes()
    backend = KafkaBackend(bootstrap, topic_prefix=prefix, **kw)
    async with trio.open_nursery() as nursery:
        await backend.start(nursery, changes)
        try:
            yield backend, changes
        finally:
            await backend.close()
            nursery.cancel_scope.cancel()


async def consume(backend, name, group, size, view):
    """One read(): what reader.py does, through Backend.consume."""

    def decide(fetched):
        taken = take(fetched.cursor, fetched.records, size, view=view)
        return taken.cursor, taken

    return await backend.consume(name, group, size, decide)


async def wait_records(backend, name, group="g", timeout=10.0):
    """Fetch until the records show up (the partition may still be moving here)."""
    with trio.fail_after(timeout):
        while True:
            fetched = await backend.fetch(name, group, 1 << 20)
            if fetched.records:
                return fetched
            await trio.sleep(0.05)


def kcat(*args, input=b""):
    result = subprocess.run([KCAT, *args], input=input, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def other_client(bootstrap, coro_fn):
    """Run an aiokafka coroutine in a throw-away asyncio loop: another Kafka client."""

    async def main():
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return await coro_fn(admin)
        finally:
            await admin.close()

    return trio.to_thread.run_sync(asyncio.run, main())


# -- pipes ---------------------------------------------------------------------

def test_create_list_exists_delete(kafka_bootstrap):
    async def main():
        async with mounted(kafka_bootstrap, unique_prefix()) as (b, changes):
            assert await b.list_pipes() == []
            assert await b.create_pipe("p") is True
            assert await b.create_pipe("p") is False
            assert "p" in changes.names
            assert await b.create_pipe("other") is True
            assert await b.list_pipes() == ["other", "p"]
            assert await b.pipe_exists("p")
            assert not await b.pipe_exists("q")
            with pytest.raises(InvalidName):
                await b.create_pipe("x" * 249)  # with the prefix: over Kafka's 249

            assert await b.delete_pipe("p") is True
            assert await b.delete_pipe("p") is False
            assert await b.list_pipes() == ["other"]
            assert not await b.pipe_exists("p")
            with pytest.raises(NoSuchPipe):
                await b.append("p", [Record(Kind.DATA, None, b"x")])
            with pytest.raises(NoSuchPipe):
                await b.attach("p", "g")
            with pytest.raises(NoSuchPipe):
                await b.fetch("p", "g", 100)
            # A pipe of the same name starts empty again.
            assert await b.create_pipe("p") is True
            assert await b.attach("p", "g") == 0

    run(main)


def test_pipe_made_by_another_client_shows_up_within_a_second(kafka_bootstrap):
    from aiokafka.admin import NewTopic

    prefix = unique_prefix()

    async def main():
        async with mounted(kafka_bootstrap, prefix) as (b, changes):
            async def create(admin):
                # The bare prefix is a topic whose pipe name ("") is not valid.
                await admin.create_topics([NewTopic(prefix + "ext", 1, 1), NewTopic(prefix, 1, 1)])

            await other_client(kafka_bootstrap, create)
            start = time.monotonic()
            with trio.fail_after(1.0):
                await changes.wait_for("ext")
            appeared = time.monotonic() - start
            assert "ext" in b._cluster.topics  # the cache pipe_exists answers from
            assert await b.pipe_exists("ext")
            assert await b.list_pipes() == ["ext"]  # not the topic with an invalid name

            mark = len(changes.names)
            await other_client(kafka_bootstrap,
                               lambda admin: admin.delete_topics([prefix + "ext"]))
            start = time.monotonic()
            with trio.fail_after(1.0):
                await changes.wait_for("ext", mark)
            gone = time.monotonic() - start
            assert not await b.pipe_exists("ext")
            print(f"created elsewhere: seen after {appeared * 1000:.0f} ms,"
                  f" deleted: after {gone * 1000:.0f} ms")

        await other_client(kafka_bootstrap, lambda admin: admin.delete_topics([prefix]))
        # Without a prefix every topic is a candidate: Kafka's own stay hidden.
        async with mounted(kafka_bootstrap, "") as (b, _):
            names = await b.list_pipes()
            assert "__consumer_offsets" not in names
            assert not [n for n in names if n.startswith("__")]

    run(main)


def test_unreachable_broker_is_one_readable_line():
    async def main():
        backend = KafkaBackend("127.0.0.1:1")
        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            with pytest.raises(StoreError) as info:
                await backend.start(nursery, lambda name, gone=False: None)
        assert time.monotonic() - start < 15
        message = str(info.value)
        assert message.startswith("cannot reach Kafka at 127.0.0.1:1: ")
        assert "\n" not in message

    run(main, timeout=30)


def test_a_broker_that_never_answers_is_named_with_what_was_waited_for():
    """A listener that takes connections and answers nothing (a frozen or
    overloaded broker, a wrong service on the port): the line says which
    step of the start had no answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]

    async def main():
        backend = KafkaBackend(f"127.0.0.1:{port}")
        async with trio.open_nursery() as nursery:
            with pytest.raises(StoreError) as info:
                await backend.start(nursery, lambda name, gone=False: None)
        message = str(info.value)
        assert message.startswith(f"cannot reach Kafka at 127.0.0.1:{port}: no answer within ")
        assert "(waiting for the cluster's metadata" in message
        assert "\n" not in message

    try:
        run(main, timeout=40)
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_bad_settings_are_refused_before_connecting(tmp_path):
    with pytest.raises(StoreError, match="bootstrap"):
        KafkaBackend("no-port-here").check()
    with pytest.raises(StoreError, match="topic prefix"):
        KafkaBackend("127.0.0.1:9092", topic_prefix="bad/prefix").check()
    config = tmp_path / "client.properties"
    config.write_text("security.protocol=PLAINTEXT\nsasl.mechnism=PLAIN\n")
    with pytest.raises(StoreError, match="unknown setting 'sasl.mechnism'"):
        KafkaBackend("127.0.0.1:9092", config_file=config).check()


# -- records -------------------------------------------------------------------

RECORDS = [
    Record(Kind.BEGIN, "s1"),
    Record(Kind.DATA, "s1", b"hello "),
    Record(Kind.DATA, "s1", b"\x00binary\xff\n"),
    Record(Kind.BEGIN, "s2"),
    Record(Kind.DATA, "s2", b""),
    Record(Kind.END, "s1"),
    Record(Kind.DATA, None, b"plain"),
    Record(Kind.END, "s2"),
]


def test_records_and_markers_come_back_as_written(kafka_bootstrap):
    async def main():
        async with mounted(kafka_bootstrap, unique_prefix()) as (b, _):
            await b.create_pipe("p")
            assert await b.attach("p", "g") == 0
            await b.append("p", RECORDS)
            fetched = await b.fetch("p", "g", 1 << 20)  # no waiting: the records exist
            assert fetched.cursor == Cursor()
            got = [(r.offset, r.kind, r.session, r.data) for r in fetched.records]
            assert got == [(i, r.kind, r.session, r.data) for i, r in enumerate(RECORDS)]

            view = ReaderView(0)
            first = await consume(b, "p", "g", 1 << 20, view)
            # The bytes of both sessions and the plain record; EOF comes next.
            assert first.data == b"hello \x00binary\xff\nplain" and not first.eof
            second = await consume(b, "p", "g", 1 << 20, first.view)
            assert second.data == b"" and second.eof
            assert second.cursor == Cursor(len(RECORDS), 0, frozenset())
            assert await b.attach("p", "g") == len(RECORDS)  # the horizon: the end offset

            await b.append("p", [], durable=True)  # sync only: nothing to store

    run(main)


def test_commit_is_compare_and_swap(kafka_bootstrap):
    async def main():
        async with mounted(kafka_bootstrap, unique_prefix()) as (b, _):
            await b.create_pipe("p")
            await b.append("p", RECORDS)
            horizon = await b.attach("p", "g")
            fetched = await b.fetch("p", "g", 1 << 20)
            taken = take(fetched.cursor, fetched.records, 8, view=ReaderView(horizon))
            assert taken.data == b"hello \x00b"
            assert taken.cursor == Cursor(2, 2, frozenset({"s1"}))

            assert await b.commit("p", "g", fetched.cursor, taken.cursor) is True
            # The same swap again: the cursor is no longer `expected`.
            assert await b.commit("p", "g", fetched.cursor, taken.cursor) is False
            # A group this mount is not a member of holds nothing here.
            assert await b.commit("p", "elsewhere", Cursor(), taken.cursor) is False
            again = await b.fetch("p", "g", 1 << 20)
            assert again.cursor == taken.cursor
            assert again.records[0].offset == 2  # the partly read record is returned whole
            rest = take(again.cursor, again.records, 6, view=taken.view)
            assert rest.data == b"inary\xff"

    run(main)


def test_cursor_survives_detach_and_continues_on_another_mount(kafka_bootstrap):
    prefix = unique_prefix()

    async def main():
        async with mounted(kafka_bootstrap, prefix) as (b1, _), \
                mounted(kafka_bootstrap, prefix) as (b2, _):
            await b1.create_pipe("p")
            await b1.append("p", [Record(Kind.BEGIN, "w"), Record(Kind.DATA, "w", b"0123456789"),
                                  Record(Kind.DATA, "w", b"abc")])
            horizon = await b1.attach("p", "g")
            taken = await consume(b1, "p", "g", 4, ReaderView(horizon))
            assert taken.data == b"0123"
            await b1.detach("p", "g")  # commits, leaves the group

            start = time.monotonic()
            await b2.attach("p", "g")
            fetched = await wait_records(b2, "p")
            moved = time.monotonic() - start
            assert fetched.cursor == Cursor(1, 4, frozenset({"w"}))
            rest = await consume(b2, "p", "g", 100, ReaderView(horizon))
            assert rest.data == b"456789abc"
            await b2.append("p", [Record(Kind.END, "w")])
            end = await consume(b2, "p", "g", 100, rest.view)
            assert end.eof  # "w" was open in the cursor that came over from b1
            print(f"second mount delivered {moved * 1000:.0f} ms after attaching")

    run(main)


def test_one_member_holds_the_partition_and_it_moves_on_detach(kafka_bootstrap):
    prefix = unique_prefix()

    async def main():
        async with mounted(kafka_bootstrap, prefix) as (b1, _), \
                mounted(kafka_bootstrap, prefix) as (b2, _):
            await b1.create_pipe("p")
            await b1.append("p", [Record(Kind.DATA, None, b"x%d" % i) for i in range(10)])
            await b1.attach("p", "g")
            await b2.attach("p", "g")
            # One holder, the same for 3 s: b2's join may still be on its way
            # when b1 first holds the partition, and then rebalances it.
            holders, since = [], time.monotonic()
            with trio.fail_after(30):
                while len(holders) != 1 or time.monotonic() - since < 3:
                    await trio.sleep(0.1)
                    now = [b for b in (b1, b2) if (await b.fetch("p", "g", 1 << 20)).records]
                    if now != holders:
                        holders, since = now, time.monotonic()
            for _ in range(10):  # stable: the other one gets nothing
                assert [bool((await b.fetch("p", "g", 1 << 20)).records)
                        for b in (b1, b2)] == [holders[0] is b1, holders[0] is b2]
            holder = holders[0]
            other = b2 if holder is b1 else b1
            taken = await consume(holder, "p", "g", 4, ReaderView(0))
            assert taken.data == b"x0x1"
            await holder.detach("p", "g")
            start = time.monotonic()
            fetched = await wait_records(other, "p", "g")
            moved = time.monotonic() - start
            assert fetched.cursor.offset == 2
            assert moved < 5, f"the partition took {moved:.1f} s to move"
            print(f"partition moved to the other mount in {moved * 1000:.0f} ms")

    run(main)


def test_first_byte_latency_of_a_new_reader(kafka_bootstrap):
    """A reader opening a pipe with data waiting: attach, then one read."""
    prefix = unique_prefix()

    async def main():
        async with mounted(kafka_bootstrap, prefix) as (writer, _), \
                mounted(kafka_bootstrap, prefix) as (reader, _):
            await writer.create_pipe("p")
            took = []
            for i in range(12):
                await writer.append("p", [Record(Kind.DATA, None, b"%d" % i)])
                start = time.monotonic()
                horizon = await reader.attach("p", "g")
                taken = await consume(reader, "p", "g", 100, ReaderView(horizon))
                took.append(time.monotonic() - start)
                assert taken.data == b"%d" % i
                await reader.detach("p", "g")
            p50 = statistics.median(took)
            print(f"first byte: p50 {p50 * 1000:.0f} ms, max {max(took) * 1000:.0f} ms")
            assert p50 < 0.3

    run(main)


def test_delete_group(kafka_bootstrap):
    async def main():
        async with mounted(kafka_bootstrap, unique_prefix()) as (b, _):
            await b.create_pipe("p")
            await b.append("p", [Record(Kind.DATA, None, b"one"), Record(Kind.DATA, None, b"two")])
            assert await b.delete_group("p", "audit") is False
            horizon = await b.attach("p", "audit")
            taken = await consume(b, "p", "audit", 3, ReaderView(horizon))
            assert taken.data == b"one"
            with pytest.raises(Busy, match="readers open"):
                await b.delete_group("p", "audit")
            await b.detach("p", "audit")
            assert await b.delete_group("p", "audit") is True
            assert await b.delete_group("p", "audit") is False
            await b.attach("p", "audit")  # a new group: from the oldest record again
            fetched = await wait_records(b, "p", "audit")
            assert fetched.cursor == Cursor() and fetched.records[0].data == b"one"

    run(main)


# -- producer ------------------------------------------------------------------

def test_idempotent_producer_keeps_order_without_duplicates(kafka_bootstrap):
    async def main():
        async with mounted(kafka_bootstrap, unique_prefix()) as (b, _):
            producer = b._cluster.producer
            assert producer._txn_manager is not None and producer._txn_manager.producer_id >= 0
            await b.create_pipe("p")
            sent = [Record(Kind.DATA, "s", b"%05d" % i + bytes(i % 700)) for i in range(3000)]
            await b.append("p", sent[:1000])
            await b.append("p", sent[1000:])
            await b.attach("p", "g")
            got = []
            with trio.fail_after(20):
                while len(got) < len(sent):
                    fetched = await b.fetch("p", "g", 1 << 20)
                    got.extend(fetched.records)
                    new = Cursor(fetched.records[-1].offset + 1, 0, frozenset({"s"}))
                    assert await b.commit("p", "g", fetched.cursor, new)
            assert [r.offset for r in got] == list(range(len(sent)))
            assert [r.data for r in got] == [r.data for r in sent]

    run(main)


def test_a_record_of_max_record_size_is_accepted(kafka_bootstrap):
    async def main():
        async with mounted(kafka_bootstrap, unique_prefix()) as (b, _):
            assert b._cluster.message_max_bytes == 1048588  # the dev broker: Kafka's default
            assert 900_000 <= b.max_record_size < 1048588 - 100
            await b.create_pipe("p")
            big = bytes(range(256)) * (b.max_record_size // 256) + b"x" * (b.max_record_size % 256)
            assert len(big) == b.max_record_size
            await b.append("p", [Record(Kind.DATA, "0123456789abcdef", big)])
            with pytest.raises(StoreError, match="over the limit"):
                await b.append("p", [Record(Kind.DATA, "s", big + b"!")])
            await b.attach("p", "g")
            fetched = await b.fetch("p", "g", 1 << 21)
            assert [len(r.data) for r in fetched.records] == [len(big)]
            assert fetched.records[0].data == big

    run(main)


# -- other Kafka clients: kcat -------------------------------------------------

@needs_kcat
def test_kcat_records_plain_and_with_markers(kafka_bootstrap):
    prefix = unique_prefix()
    topic = prefix + "p"

    async def main():
        async with mounted(kafka_bootstrap, prefix) as (b, _):
            await b.create_pipe("p")
            produce = ["-b", kafka_bootstrap, "-P", "-t", topic]
            await trio.to_thread.run_sync(lambda: (
                kcat(*produce, input=b"hello from kcat\n"),
                kcat(*produce, "-H", "dnpfs.kind=begin", "-H", "dnpfs.session=k1", input=b".\n"),
                kcat(*produce, "-H", "dnpfs.kind=data", "-H", "dnpfs.session=k1",
                     input=b"in session\n"),
                kcat(*produce, "-H", "dnpfs.kind=bogus", "-H", "dnpfs.session=k1",
                     input=b"bogus kind\n"),
                kcat(*produce, "-H", "dnpfs.kind=end", "-H", "dnpfs.session=k1", input=b".\n"),
            ))
            horizon = 0
            await b.attach("p", "g")
            fetched = await wait_records(b, "p")
            got = [(r.kind, r.session, r.data) for r in fetched.records]
            assert got == [
                (Kind.DATA, None, b"hello from kcat"),
                (Kind.BEGIN, "k1", b""),
                (Kind.DATA, "k1", b"in session"),
                (Kind.DATA, None, b"bogus kind"),  # not a dnpfs kind: plain data
                (Kind.END, "k1", b""),  # a marker's value is ignored
            ]
            taken = await consume(b, "p", "g", 100, ReaderView(horizon))
            assert taken.data == b"hello from kcatin sessionbogus kind"
            assert (await consume(b, "p", "g", 100, taken.view)).eof

            # And the other way: kcat reads what dnpfs wrote, headers included.
            await b.append("p", [Record(Kind.DATA, "0123abcd", b"from dnpfs")])
            out = await trio.to_thread.run_sync(lambda: kcat(
                "-b", kafka_bootstrap, "-C", "-t", topic, "-o", "5", "-e", "-q",
                "-f", "%h|%s\n"))
            assert out == b"dnpfs.session=0123abcd,dnpfs.kind=data|from dnpfs\n"

    run(main)


# -- security: the dev broker's SASL and TLS listeners -------------------------

@pytest.mark.parametrize("config_name", ["scram", "plain", "ssl", "sasl-ssl"])
def test_secured_listeners(kafka_bootstrap, config_name):
    """One pipe through each secured listener, with scripts/kafka-dev's client files."""
    from dnpfs.backends.kafka.config import ClientConfig

    out = subprocess.run([str(Path(__file__).resolve().parents[2] / "scripts" / "kafka-dev"),
                          "client-config", config_name], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0 or not out.stdout.strip():
        pytest.skip(f"scripts/kafka-dev has no client config {config_name!r}")
    path = out.stdout.strip().splitlines()[-1]
    address = ClientConfig.load(path).bootstrap

    async def main():
        async with mounted(address, unique_prefix(), config_file=path) as (b, _):
            await b.create_pipe("p")
            await b.append("p", [Record(Kind.DATA, "s", b"secret stuff")])
            await b.attach("p", "g")
            fetched = await b.fetch("p", "g", 100)
            assert [r.data for r in fetched.records] == [b"secret stuff"]
            await b.detach("p", "g")
            assert await b.delete_pipe("p")

    run(main)


def test_pipe_deleted_by_another_mount(kafka_bootstrap):
    prefix = unique_prefix()

    async def main():
        async with mounted(kafka_bootstrap, prefix) as (b1, changes), \
                mounted(kafka_bootstrap, prefix) as (b2, _):
            await b1.create_pipe("p")
            await b1.create_pipe("q")
            await b1.append("p", [Record(Kind.BEGIN, "s"), Record(Kind.DATA, "s", b"x")])
            await b1.attach("p", "g")
            await wait_records(b1, "p")
            mark = len(changes.names)
            assert await b2.delete_pipe("p")
            # The background refresh sees it go and wakes readers and writers
            # (the notice reaches trio a moment after the topic list changes) ...
            with trio.fail_after(2.0):
                await changes.wait_for("p", since=mark)
            assert "p" not in b1._cluster.topics
            with pytest.raises(NoSuchPipe):  # ... which learn that the pipe is gone
                await b1.fetch("p", "g", 100)
            with pytest.raises(NoSuchPipe):
                await b1.append("p", [Record(Kind.DATA, "s", b"more")])
            await b1.detach("p", "g")
            # The mount goes on with its other pipes.
            start = time.monotonic()
            await b1.append("q", [Record(Kind.DATA, None, b"fine")])
            assert time.monotonic() - start < 2

    run(main)


def test_reader_left_behind_by_a_racing_detach_is_woken_and_joins_again(kafka_bootstrap):
    """pipes.py attaches per open and detaches when the last registered reader
    closes, so an open racing with the last close may find its group detached."""

    async def main():
        async with mounted(kafka_bootstrap, unique_prefix()) as (b, changes):
            await b.create_pipe("p")
            horizon = await b.attach("p", "g")  # the racing open: attach returned ...
            assert not (await consume(b, "p", "g", 100, ReaderView(horizon))).data
            mark = len(changes.names)
            await b.detach("p", "g")  # ... then the previous reader's close detached
            assert "p" in changes.names[mark:]  # so the waiting reader is woken,
            await b.append("p", [Record(Kind.DATA, None, b"late")])
            taken = await consume(b, "p", "g", 100, ReaderView(horizon))  # and its read joins
            assert taken.data == b"late"

    run(main)


def test_a_fetch_session_the_broker_refuses_is_opened_again(kafka_bootstrap, caplog):
    """The fetcher keeps an incremental fetch session with the broker; when
    the broker no longer knows it (restarted, evicted, out of step), the next
    request opens another and reading goes on with nothing lost."""
    caplog.set_level("INFO", logger="dnpfs.backends.kafka._fetcher")

    async def main():
        async with mounted(kafka_bootstrap, unique_prefix()) as (b, _):
            await b.create_pipe("p")
            await b.attach("p", "g")
            await b.append("p", [Record(Kind.DATA, None, b"one")])
            await wait_records(b, "p")
            sessions = b._cluster.fetcher.sessions
            assert any(s.id for s in sessions.values())  # this broker gave one

            async def out_of_step():
                for s in sessions.values():
                    s.epoch += 1000

            await b._bridge.call(out_of_step)
            # The request waiting at the broker carries the old epoch: the
            # refusal comes with the next one, within a fetch wait or so.
            with trio.fail_after(10):
                while "opening another" not in caplog.text:
                    await trio.sleep(0.05)
            await b.append("p", [Record(Kind.DATA, None, b"two")])
            with trio.fail_after(10):
                while True:
                    fetched = await b.fetch("p", "g", 1 << 20)
                    if len(fetched.records) == 2:
                        break
                    await trio.sleep(0.05)
            assert [r.data for r in fetched.records] == [b"one", b"two"]

    run(main)


def fetch_session_probe(bootstrap, node, session_id, epoch, topic=None):
    """One Fetch request of another client with these session fields; returns
    the response's (error code, session id).  The broker looks a session up
    by id alone, so another client can tell whether it still exists: error 70
    (FETCH_SESSION_ID_NOT_FOUND) once it is closed or evicted."""
    from aiokafka.client import AIOKafkaClient

    from dnpfs.backends.kafka._fetcher import fetch_request

    async def main():
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        await client.bootstrap()
        try:
            start = {topic: 0} if topic else {}
            response = await client.send(node, fetch_request(session_id, epoch, start, [],
                                                                   max_wait_ms=0))
            return response.error_code, response.session_id
        finally:
            await client.close()

    return trio.to_thread.run_sync(asyncio.run, main())


def test_a_stopping_mount_closes_its_fetch_sessions(kafka_bootstrap):
    """A broker keeps 1,000 fetch sessions for all its consumers and an
    abandoned one for 2 minutes: a mount that stops gives its sessions back."""

    async def main():
        prefix = unique_prefix()
        async with mounted(kafka_bootstrap, prefix) as (b, _):
            await b.create_pipe("p")
            await b.attach("p", "g")
            await b.append("p", [Record(Kind.DATA, None, b"one")])
            await wait_records(b, "p")
            held = [(node, s.id) for node, s in b._cluster.fetcher.sessions.items() if s.id]
            assert held  # this broker gave one
            topic = b._cluster.topic("p")

        for node, session_id in held:
            assert await fetch_session_probe(kafka_bootstrap, node, session_id, 1) == (70, 0)
        # The probe can see a live session: one it opens itself answers its next epoch.
        node = held[0][0]
        error, opened = await fetch_session_probe(kafka_bootstrap, node, 0, 0, topic)
        assert error == 0 and opened != 0
        assert (await fetch_session_probe(kafka_bootstrap, node, opened, 1))[0] == 0
        await fetch_session_probe(kafka_bootstrap, node, opened, -1)  # and closes it again

    run(main)


def test_a_producer_stopped_for_good_is_replaced(kafka_bootstrap):
    """aiokafka's sender ends on OutOfOrderSequenceNumber (what a broker that
    lost the tail of a log answers after a restart, aiokafka#1017) and then
    fails every later send.  The failure is injected the way aiokafka's
    sender dies (its task ends with the error, failing what is queued); the
    appends before and after go to the real broker."""
    from aiokafka.errors import OutOfOrderSequenceNumber

    async def kill_sender(cluster):
        sender = cluster.producer._sender

        async def fatal():
            raise OutOfOrderSequenceNumber()

        sender._sender_task.cancel()
        task = asyncio.get_running_loop().create_task(fatal())
        task.add_done_callback(sender._fail_all)
        sender._sender_task = task
        await asyncio.sleep(0)
        return cluster.producer

    async def main():
        async with mounted(kafka_bootstrap, unique_prefix()) as (b, _):
            await b.create_pipe("p")
            await b.append("p", [Record(Kind.DATA, "s1", b"before")])
            old = await b._call(kill_sender, b._cluster)
            await b.append("p", [Record(Kind.DATA, "s1", b"after")])
            assert b._cluster.producer is not old
            fetched = await wait_records(b, "p")
            with trio.fail_after(10):
                while len(fetched.records) < 2:
                    await trio.sleep(0.05)
                    fetched = await b.fetch("p", "g", 1 << 20)
            assert [r.data for r in fetched.records] == [b"before", b"after"]

    run(main)

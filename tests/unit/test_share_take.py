"""A Kafka share reader's reads as the trio thread makes them
(``_share.ShareReader.try_take``, ``settle``) and what they leave the
asyncio loop (``_tick``).  No broker: the reader runs on a real asyncio loop
in a thread of its own, as under the backend's bridge, with its records put
in by hand; these are the lock and hand-over rules."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque

import pytest

from dnpfs.backends.kafka import _share
from dnpfs.backends.kafka._aiokafka.share_requests import ACCEPT, RELEASE
from dnpfs.backends.kafka._share import Acquired, ShareReader
from dnpfs.backends.kafka._window import Window
from dnpfs.model import Cursor, Kind, StoredRecord

RECORD = 1000


class Cluster:
    """What a ShareReader asks of its cluster before it starts."""

    def topic(self, name: str) -> str:
        return f"t.{name}"


class Reader(ShareReader):
    """Counts the loop's ticks; its fetch loop is never started."""

    ticks = 0

    def _tick(self) -> None:
        assert self._on_loop()
        self.ticks += 1
        super()._tick()


class LoopOnly:
    """Stands for the reader's asyncio.Event: the trio side must not touch it."""

    def __init__(self, reader: ShareReader) -> None:
        self.reader = reader
        self.sets = 0

    def set(self) -> None:
        assert self.reader._on_loop(), "an asyncio object touched outside the loop"
        self.sets += 1


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def on_loop(loop, fn, *args):
    async def call():
        return fn(*args)
    return asyncio.run_coroutine_threadsafe(call(), loop).result(5)


@pytest.fixture
def reader(loop):
    def make():
        r = Reader(Cluster(), "p", notify=lambda name: None, aside=deque())
        r._loop, r._loop_thread = loop, threading.get_ident()
        r._wake = LoopOnly(r)
        return r
    return on_loop(loop, make)


def data(*offsets: int) -> list[Acquired]:
    return [Acquired(StoredRecord(o, Kind.DATA, None, bytes(RECORD)), 1) for o in offsets]


def one_record(fetched):
    """A decide() that takes the first record handed over."""
    if not fetched.records:
        return fetched.cursor, 0
    rec = fetched.records[0]
    return Cursor(rec.offset + 1), rec.offset


def wait_for(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def streaming(reader: ShareReader, holder: object, size: int, *offsets: int) -> None:
    """*holder* streams with a window of *size*, *offsets* acquired ahead for it."""
    with reader.lock:
        window = reader._windows[holder] = Window()
        window.size = size
        reader._ahead[holder] = deque(data(*offsets))


def test_reads_of_records_held_ahead_are_decided_here_and_wake_the_loop_once_a_tick(reader):
    holder = object()
    streaming(reader, holder, 64, *range(40))
    taken = []
    start = time.monotonic()
    for _ in range(40):
        reader.settle(holder)
        done = reader.try_take(holder, RECORD, one_record)
        assert done is not None
        taken.append(done[0])
    elapsed = time.monotonic() - start
    assert taken == list(range(40))
    # The loop woke for the first read (and the refill), then once a tick
    # while the reads went on: not per read
    wait_for(lambda: reader.ticks >= 1)
    assert reader.ticks <= 2 + elapsed / _share.TICK < 40
    assert reader._refills == {holder}  # the next window is asked for ...
    wait_for(lambda: reader._wake.sets >= 1)  # ... on the loop
    with reader.lock:
        assert [o for o, kind in reader._acks if kind == ACCEPT] == list(range(39))
        assert [a.record.offset for a in reader._held[holder]] == [39]


def test_a_read_takes_as_many_of_its_records_ahead_as_it_has_room_for(reader):
    holder = object()
    streaming(reader, holder, 8, *range(5))

    def all_records(fetched):
        return Cursor(fetched.records[-1].offset + 1), [r.offset for r in fetched.records]

    assert reader.try_take(holder, 3 * RECORD, all_records) == ([0, 1, 2],)
    with reader.lock:
        assert [a.record.offset for a in reader._held[holder]] == [0, 1, 2]
        assert [a.record.offset for a in reader._ahead[holder]] == [3, 4]


def test_a_read_of_several_records_stops_at_one_that_came_back_out_of_order(reader):
    # Record 250 went back from another mount and came here again after 300
    # and 301: read with them, delivery.take would skip it as read (it is
    # below the cursor) and the share reader would accept it undelivered.
    from dnpfs.delivery import take

    holder = object()
    streaming(reader, holder, 8, 300, 301, 250, 302)

    def read(fetched):
        taken = take(fetched.cursor, fetched.records, 4 * RECORD, whole=True)
        return taken.cursor, taken.size

    assert reader.try_take(holder, 4 * RECORD, read) == (2 * RECORD,)
    assert reader.try_take(holder, 4 * RECORD, read) == (2 * RECORD,)
    with reader.lock:
        assert [a.record.offset for a in reader._held[holder]] == [300, 301, 250, 302]


def test_records_a_read_did_not_take_stay_first_in_line(reader):
    holder = object()
    streaming(reader, holder, 8, *range(3))
    assert reader.try_take(holder, 3 * RECORD, one_record) == (0,)
    with reader.lock:
        assert [a.record.offset for a in reader._ahead[holder]] == [1, 2]


def test_an_end_marker_and_an_empty_queue_are_left_to_the_loop(reader):
    holder = object()
    assert reader.try_take(holder, RECORD, one_record) is None  # nothing here
    with reader.lock:
        reader._ready.append(Acquired(StoredRecord(0, Kind.END, "s"), 1))
    # EOF is the ledger's to decide, on the loop
    assert reader.try_take(holder, RECORD, one_record) is None
    with reader.lock:
        assert len(reader._ready) == 1 and not reader._held and not reader._acks
    assert reader.ticks == 0


def test_a_closing_reader_hands_out_nothing_here(reader, loop):
    holder = object()
    streaming(reader, holder, 8, 0, 1)
    reader.closing = True
    assert reader.try_take(holder, RECORD, one_record) is None


def test_records_ahead_go_back_when_the_handle_settles_and_reads_no_more(reader):
    holder = object()
    streaming(reader, holder, 8, 0, 1, 2)
    assert reader.try_take(holder, RECORD, one_record) == (0,)
    reader.settle(holder)  # a close
    wait_for(lambda: (RELEASE in {kind for _, kind in reader._acks}))
    with reader.lock:
        assert sorted(reader._acks) == [(0, ACCEPT), (1, RELEASE), (2, RELEASE)]
        assert holder not in reader._ahead and holder not in reader._windows
        assert not reader._leaving


def test_a_read_within_the_grace_keeps_the_records_ahead(reader, monkeypatch):
    monkeypatch.setattr(_share, "LEAVE_GRACE", 0.3)
    holder = object()
    streaming(reader, holder, 8, 0, 1, 2)
    reader.try_take(holder, RECORD, one_record)
    reader.settle(holder)
    time.sleep(0.1)  # ticks run meanwhile
    assert reader.try_take(holder, RECORD, one_record) == (1,)
    time.sleep(0.4)
    with reader.lock:
        assert [a.record.offset for a in reader._ahead[holder]] == [2]
        assert RELEASE not in {kind for _, kind in reader._acks}


def test_two_reads_of_one_handle_before_it_settles_hold_both_records(reader, loop):
    """Two reads of one open file at once (threads, or processes that share
    it since a fork), or a read of a record with no bytes, take twice before
    the handle settles: both records are its job, given back if it is killed
    (the second used to replace the first, which was then neither accepted
    nor given back)."""
    holder = object()
    with reader.lock:
        reader._ready.extend(data(0, 1))
    assert on_loop(loop, reader.take, holder, RECORD, one_record) == 0
    assert on_loop(loop, reader.take, holder, RECORD, one_record) == 1
    on_loop(loop, reader.give_back, holder)
    with reader.lock:
        assert sorted(reader._acks) == [(0, RELEASE), (1, RELEASE)]


def test_a_share_fetch_response_is_read_in_place_as_aiokafka_reads_it():
    """``_decode_share_fetch`` (the share member's connection reads the frame
    in place) against aiokafka's decoder of the same schema."""
    import uuid
    from io import BytesIO

    from dnpfs.backends.kafka._aiokafka import share_requests as rq

    topic = uuid.uuid4()
    records = bytes(range(256)) * 40
    partitions = [
        (0, 0, None, 7, "refused", (1, 3, {}), records, [(5, 9, 1, {}), (12, 12, 3, {})], {}),
        (1, 6, "not leader", 0, None, (2, 4, {}), None, [], {}),
    ]
    response = rq.ShareFetchResponse_v2(3, 0, None, 30000, [(topic, partitions, {})],
                                        [(1, "host", 9092, None, {})], {})
    # the header: one tagged field of one byte (aiokafka encodes none right)
    frame = b"\x01\x02\x01z" + response.encode()
    theirs = BytesIO(frame)
    rq.TaggedFields.decode(theirs)
    theirs = rq.ShareFetchResponse_v2.decode(theirs)
    ours = rq._decode_share_fetch(memoryview(frame))
    assert (ours.error_code, ours.error_message) == (theirs.error_code, theirs.error_message)
    [(topic_id, got, _)] = ours.responses
    assert topic_id == topic
    for mine, want in zip(got, theirs.responses[0][1], strict=True):
        assert mine[:5] == tuple(want[:5])
        assert (bytes(mine[6]) if mine[6] is not None else None) == want[6]
        assert [r[:3] for r in mine[7]] == [tuple(r[:3]) for r in want[7]]
    with pytest.raises(ValueError):
        rq._decode_share_fetch(memoryview(frame[:200]))


@pytest.mark.parametrize("markers", [1, 2])
def test_a_window_that_ends_in_begin_markers_leaves_the_read_the_mounts_records(reader, loop,
                                                                               markers):
    """The records acquired ahead for a handle ran out at a BEGIN marker (a
    writer opened a session there) while its next window's records came in
    for the mount.  The read skipped the markers and found nothing ahead,
    and no ShareFetch was due (the mount had a record for the one handle
    that waited), so the reader waited for good: the broker-restart fault
    test's lost records (docs/decisions.md, "Share groups after a broker
    restart")."""
    holder = object()
    with reader.lock:
        reader._windows[holder] = Window()
        reader._windows[holder].size = 8
        reader._ahead[holder] = deque(Acquired(StoredRecord(o, Kind.BEGIN, "s"), 1)
                                      for o in range(5, 5 + markers))
        reader._ready.extend(data(9))
    done = reader.try_take(holder, RECORD, one_record)
    got = done[0] if done is not None else on_loop(loop, reader.take, holder, RECORD,
                                                   one_record)
    assert got == 9
    with reader.lock:
        assert [(o, k) for o, k in reader._acks if o < 9] == \
            [(o, ACCEPT) for o in range(5, 5 + markers)]


def test_a_read_that_ends_empty_at_an_end_marker_asks_for_its_next_record(reader, loop):
    """An END marker that is no EOF for the reader (another session is open),
    with nothing after it here: the read ends empty and its reader waits
    for news.  Nothing asked the broker for the next record, so none came:
    the reader waited for good, with the writers' records in the log (the
    broker-restart fault test's lost records, docs/decisions.md, "Share
    groups after a broker restart")."""
    from dnpfs.delivery import take

    holder = object()
    with reader.lock:
        reader._ready.append(Acquired(StoredRecord(5, Kind.END, "s"), 1))
    reader.ledger.next = 6  # the ledger read past it: sessions s and t were open there
    reader.ledger._ends[5] = frozenset({"s", "t"})

    def read(fetched):
        taken = take(fetched.cursor, fetched.records, RECORD, whole=True)
        return taken.cursor, taken

    taken = on_loop(loop, reader.take, holder, RECORD, read)
    assert taken.size == 0 and not taken.eof
    with reader.lock:
        assert holder in reader._wants and reader._wanted() == 1
        assert reader._acks == [(5, ACCEPT)]
    reader.settle(holder)  # an EOF's settle (reader.py) takes the ask back
    with reader.lock:
        assert reader._wanted() == 0


def test_a_handle_with_nothing_here_reads_the_later_half_of_another_handles_records_ahead(
        reader):
    # Found by tests/semantics/test_conformance.py (each_byte_goes_to_one_reader,
    # 1 run in 4): two non-blocking readers on one mount; the mount's records
    # all went ahead to one of them, the other's poll() said readable, its
    # read found nothing of its own and waited two rounds for a ShareFetch
    # that could find nothing (they were acquired), then got EAGAIN.
    first, second = object(), object()
    streaming(reader, first, 8, *range(5))
    assert reader.try_take(second, RECORD, one_record) == (2,)
    with reader.lock:
        assert [a.record.offset for a in reader._ahead[first]] == [0, 1]
        assert [a.record.offset for a in reader._ahead[second]] == [3, 4]
        assert all(a.holder is second for a in reader._ahead[second])
    # each still reads in offset order
    assert [reader.try_take(first, RECORD, one_record) for _ in range(2)] == [(0,), (1,)]
    assert [reader.try_take(second, RECORD, one_record) for _ in range(2)] == [(3,), (4,)]


def test_the_mounts_own_records_come_before_another_handles_and_markers_stay_put(reader):
    first, second = object(), object()
    streaming(reader, first, 8, 0, 1)
    with reader.lock:
        reader._ready.extend(data(7))
    assert reader.try_take(second, RECORD, one_record) == (7,)  # the mount's first
    with reader.lock:
        reader._ahead[first].append(Acquired(StoredRecord(2, Kind.END, "s"), 1))
    # an END last in line stays with the handle it was fetched for
    assert reader.try_take(second, RECORD, one_record) is None
    with reader.lock:
        assert [a.record.offset for a in reader._ahead[first]] == [0, 1, 2]

"""Reading fetch responses in place (dnpfs/backends/kafka/_records.py) gives
exactly what aiokafka's own decoding gives, batch for batch."""

from __future__ import annotations

import struct

import crc32c
import pytest
from aiokafka.protocol.fetch import FetchResponse_v11
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from dnpfs.backends.kafka._records import (
    LARGE_RECORD,
    CorruptResponse,
    Unreadable,
    decode_fetch_v11,
    position_after,
    read_records,
)

GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4
CONTROL = 0x20
ABORT, COMMIT = b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"  # a control record's key


def batch(base: int, records: list, compression: int = 0, control: bool = False,
          producer: int = -1) -> bytes:
    """A v2 record batch at offset *base* of (key, value, headers) records;
    transactional when *producer* is given."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression,
                                        is_transactional=producer >= 0, producer_id=producer,
                                        producer_epoch=0 if producer >= 0 else -1,
                                        base_sequence=-1, batch_size=1 << 30)
    for i, (key, value, headers) in enumerate(records):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=key, value=value,
                       headers=headers)
    raw = builder.build()
    struct.pack_into(">q", raw, 0, base)  # the base offset is outside the CRC
    if control:
        (attributes,) = struct.unpack_from(">h", raw, 21)
        struct.pack_into(">h", raw, 21, attributes | CONTROL)
        reseal(raw)
    return bytes(raw)


def reseal(raw: bytearray) -> None:
    """The batch's CRC computed again, after a change to what it covers."""
    struct.pack_into(">I", raw, 17, crc32c.crc32c(bytes(raw[21:])))


def marker(base: int, producer: int, key: bytes) -> bytes:
    """A transaction marker: abort (ABORT) or commit (COMMIT)."""
    return batch(base, [(key, b"\x00\x00\x00\x00\x00\x00", [])], control=True, producer=producer)


def with_aiokafka(raw: bytes, start: int) -> tuple[list, int]:
    """What the fetcher read before: aiokafka's reader over the whole partition."""
    out, position = [], start
    reader = MemoryRecords(raw)
    while reader.has_next():
        got = reader.next_batch()
        if got is None:
            break
        if not got.is_control_batch:
            out.extend((r.offset, r.value, list(r.headers)) for r in got if r.offset >= start)
        position = max(position, got.next_offset)
    return out, position


def mine(raw, start: int, view: bool = False) -> tuple[list, int]:
    got, position = read_records(memoryview(raw), start, view=view)
    return [(r.offset, r.value, list(r.headers)) for r in got], position


LARGE = [(None, bytes([i]) * (LARGE_RECORD + 100 * i),
          [("dnpfs.session", b"w-1"), ("dnpfs.kind", b"data")]) for i in range(5)]
ODD = [(b"key", b"\x00\xff" * LARGE_RECORD, [("k\xe9y", None), ("e", b"")]),
       (None, None, []),
       (b"", b"", [("dnpfs.kind", b"end")])]
SMALL = [(None, b"line %d\n" % i, [("dnpfs.kind", b"data")]) for i in range(200)]

PARTITION = (batch(0, LARGE) + batch(5, ODD) + batch(8, SMALL) + batch(208, LARGE, GZIP)
             + batch(213, [(None, b"\x00\x00\x00\x00", [])], control=True) + batch(214, LARGE))


@pytest.mark.parametrize("start", [0, 3, 6, 8, 100, 210, 213, 214, 216, 219])
def test_records_match_aiokafka(start: int) -> None:
    assert mine(PARTITION, start) == with_aiokafka(PARTITION, start)


@pytest.mark.parametrize("start", [0, 3, 216])
def test_values_viewed_in_the_response_are_the_values(start: int) -> None:
    got, _ = read_records(memoryview(PARTITION), start, view=True)
    # Batches of large records, uncompressed, are read here: views.
    views = [r.value for r in got if isinstance(r.value, memoryview)]
    assert len(views) == len([r for r in got if r.offset < 5 or r.offset >= 214])
    assert all(v.obj is PARTITION and v.readonly for v in views)
    assert mine(PARTITION, start, view=True) == with_aiokafka(PARTITION, start)


def test_every_kind_of_batch_is_read() -> None:
    got, position = mine(PARTITION, 0)
    assert position == 219
    assert [offset for offset, _, _ in got] == [o for o in range(219) if o != 213]
    assert got[6][1] is None and got[6][2] == []  # a null value
    assert got[5][2] == [("k\xe9y", None), ("e", b"")]


def test_a_batch_cut_short_is_left_for_the_next_fetch() -> None:
    whole = batch(0, LARGE) + batch(5, LARGE)
    for cut in (len(whole) - 1, len(whole) - LARGE_RECORD, len(batch(0, LARGE)) + 10):
        got, position = mine(whole[:cut], 0)
        assert [offset for offset, _, _ in got] == [0, 1, 2, 3, 4]
        assert position == 5


@pytest.mark.parametrize("start", [0, 3, 100, 216, 219, 300])
def test_the_next_position_from_the_headers_is_where_reading_ends(start: int) -> None:
    """The fetcher asks for the next records before it reads these
    (position_after): it must ask where reading them ends, cut or whole."""
    for raw in (PARTITION, PARTITION[:-1], PARTITION[:len(PARTITION) // 2], PARTITION[:10]):
        assert position_after(memoryview(raw), start) == read_records(raw, start)[1]


def test_the_next_position_of_batches_only_reading_tells_is_not_guessed() -> None:
    short = bytearray(batch(0, SMALL[:1]))
    struct.pack_into(">i", short, 8, 40)  # shorter than a v2 batch header
    assert position_after(bytes(short), 0) is None
    legacy = bytearray(batch(0, SMALL[:1]))
    legacy[16] = 1  # the old message format
    assert position_after(bytes(legacy), 0) is None


def test_a_record_that_overruns_its_batch_is_unreadable_not_data() -> None:
    raw = bytearray(batch(0, LARGE[1:2]))  # LARGE_RECORD + 100 bytes
    struct.pack_into(">i", raw, 8, len(raw) - 12 - 50)  # batch length shorter than its record
    raw = raw[:-50]
    reseal(raw)
    after = batch(1, LARGE[:2])
    got, position = read_records(memoryview(bytes(raw) + after), 0)
    assert isinstance(got[0], Unreadable) and (got[0].first, got[0].offset) == (0, 0)
    assert [r.offset for r in got[1:]] == [1, 2] and position == 3


@pytest.mark.parametrize("codec", [GZIP, SNAPPY, LZ4, ZSTD])
def test_every_codec_is_read(codec: int) -> None:
    raw = batch(0, SMALL, codec) + batch(200, LARGE, codec)
    assert mine(raw, 0) == with_aiokafka(raw, 0)
    assert len(mine(raw, 0)[0]) == 205


@pytest.mark.parametrize("damage", ["crc", "codec", "data"])
def test_a_batch_that_cannot_be_read_is_one_unreadable_and_the_rest_is_read(damage) -> None:
    """Its offsets, once, and every batch after it as usual."""
    bad = bytearray(batch(5, SMALL[:10], ZSTD))
    if damage == "crc":
        bad[-3] ^= 0xFF
    elif damage == "codec":
        struct.pack_into(">h", bad, 21, 7)  # a compression type Kafka does not have
        reseal(bad)
    else:
        bad[61:] = bytes(len(bad) - 61)  # the zstd frame zeroed, the CRC made to fit
        reseal(bad)
    raw = batch(0, LARGE) + bytes(bad) + batch(15, LARGE)
    for start in (0, 5, 9):
        got, position = read_records(memoryview(raw), start)
        lost = [r for r in got if isinstance(r, Unreadable)]
        assert [(u.first, u.offset) for u in lost] == [(5, 14)], damage
        assert [r.offset for r in got] == [o for o in range(start, 5)] + [14] + list(range(15, 20))
        assert position == 20
    got, _ = read_records(memoryview(raw), 15)
    assert [r.offset for r in got] == list(range(15, 20))  # behind it: not met again


def test_without_crc_checks_a_damaged_crc_goes_unnoticed() -> None:
    """check.crcs=false reads as kcat does: a batch whose CRC does not match
    (here its CRC field itself is damaged) is read as if it were good."""
    bad = bytearray(batch(5, LARGE))
    bad[17] ^= 0xFF
    raw = batch(0, LARGE) + bytes(bad)
    got, position = read_records(memoryview(raw), 0, check_crcs=False)
    assert [r.offset for r in got] == list(range(10)) and position == 10
    assert got[7].value == LARGE[2][1]
    got, _ = read_records(memoryview(raw), 0)
    assert [(u.first, u.offset) for u in got if isinstance(u, Unreadable)] == [(5, 9)]


def committed(raw, aborted, start=0) -> list:
    got, position = read_records(memoryview(raw), start, aborted)
    assert not any(isinstance(r, Unreadable) for r in got)
    return [r.value[:1] for r in got], position


def test_aborted_transactions_are_skipped_and_committed_ones_read() -> None:
    one = [(None, b"c" * LARGE_RECORD, [])]
    aborted_one = [(None, b"a" * LARGE_RECORD, [])]
    raw = (batch(0, one, producer=7)            # 7: committed
           + batch(1, aborted_one, producer=8)  # 8: aborted ...
           + batch(2, SMALL[:2])                # not transactional, between
           + batch(4, aborted_one * 2, GZIP, producer=8)
           + marker(6, 7, COMMIT)
           + marker(7, 8, ABORT)
           + batch(8, one, producer=8)          # 8's next transaction: committed
           + marker(9, 8, COMMIT))
    values, position = committed(raw, [(8, 1)])
    assert values == [b"c", b"l", b"l", b"c"] and position == 10
    # Fetched from inside the aborted transaction: still skipped.
    assert committed(raw, [(8, 1)], start=4) == ([b"c"], 10)
    # Fetched from after the abort marker (inside the batch holding 8's next
    # transaction's records): that marker still ends the aborted one.
    assert committed(raw, [(8, 1)], start=8) == ([b"c"], 10)
    # Without the broker's list (read_uncommitted), everything but markers.
    assert committed(raw, []) == ([b"c", b"a", b"l", b"l", b"a", b"a", b"c"], 10)


def response(topics: list) -> memoryview:
    encoded = FetchResponse_v11(0, 0, 77, topics).encode()
    return memoryview(encoded)


def test_fetch_response_fields() -> None:
    body = response([
        ("pipes.a", [(0, 0, 219, 219, 0, [], -1, PARTITION)]),
        ("pipes.\u00e9", [(0, 1, -1, -1, -1, [(5, 10), (6, 11)], -1, b"")]),
    ])
    got = decode_fetch_v11(body)
    assert (got.error_code, got.session_id) == (0, 77)
    [(t1, [(p1, e1, hw1, ls1, ab1, raw1)]), (t2, [(p2, e2, hw2, ls2, ab2, raw2)])] = got.topics
    assert (t1, p1, e1, hw1, ls1, ab1, bytes(raw1)) == ("pipes.a", 0, 0, 219, 219, [], PARTITION)
    assert (t2, p2, e2, hw2, ls2, ab2, bytes(raw2)) == (
        "pipes.\u00e9", 0, 1, -1, -1, [(5, 10), (6, 11)], b"")


def test_a_response_cut_short_is_an_error() -> None:
    body = response([("pipes.a", [(0, 0, 219, 219, 0, [], -1, PARTITION)])])
    for cut in (3, 20, 60, len(body) - 1):
        with pytest.raises(CorruptResponse):
            decode_fetch_v11(body[:cut])

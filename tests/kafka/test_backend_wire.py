"""The record and cursor format of docs/wire-format.md (pure, no broker)."""

from __future__ import annotations

import json

import pytest

from dnpfs.backends.kafka import wire
from dnpfs.model import Cursor, Kind, Record, StoredRecord


@pytest.mark.parametrize("record", [
    Record(Kind.BEGIN, "0123456789abcdef"),
    Record(Kind.DATA, "0123456789abcdef", b"\x00bytes\xff\n"),
    Record(Kind.DATA, "s", b""),
    Record(Kind.END, "0123456789abcdef"),
    Record(Kind.DATA, None, b"plain"),
])
def test_records_round_trip(record):
    value, headers = wire.encode_record(record)
    assert value == record.data
    assert (wire.KIND_HEADER, record.kind.value.encode()) in headers
    assert wire.decode_record(7, value, headers) == StoredRecord(
        7, record.kind, record.session, record.data)


def test_headers_as_documented():
    assert wire.encode_record(Record(Kind.END, "abc")) == (
        b"", [("dnpfs.session", b"abc"), ("dnpfs.kind", b"end")])


@pytest.mark.parametrize("headers", [
    [],
    [("trace", b"x")],
    [("dnpfs.session", b"s1")],  # no kind
    [("dnpfs.kind", b"DATA"), ("dnpfs.session", b"s1")],  # kinds are lower case
    [("dnpfs.kind", b"bogus"), ("dnpfs.session", b"s1")],
    [("dnpfs.kind", None)],
])
def test_records_of_other_producers_are_plain_data(headers):
    assert wire.decode_record(3, b"hello", headers) == StoredRecord(3, Kind.DATA, None, b"hello")


def test_odd_values():
    assert wire.decode_record(0, None, None) == StoredRecord(0, Kind.DATA, None, b"")
    # A marker's value is ignored; a session that is not ASCII text is no session.
    assert wire.decode_record(1, b".", [("dnpfs.kind", b"end"), ("dnpfs.session", b"x")]) == \
        StoredRecord(1, Kind.END, "x", b"")
    assert wire.decode_record(2, b"d", [("dnpfs.kind", b"data"), ("dnpfs.session", b"\xff")]) == \
        StoredRecord(2, Kind.DATA, None, b"d")
    # The first of repeated headers counts.
    assert wire.decode_record(4, b"", [("dnpfs.kind", b"begin"), ("dnpfs.kind", b"end"),
                                       ("dnpfs.session", b"a")]).kind is Kind.BEGIN


def test_cursor_metadata_round_trip_and_is_compact():
    cursor = Cursor(42, 1234, frozenset({"b" * 16, "a" * 16}))
    meta = wire.encode_cursor(cursor)
    assert meta == '{"v":1,"pos":1234,"open":["' + "a" * 16 + '","' + "b" * 16 + '"]}'
    assert wire.decode_cursor(42, meta) == cursor


@pytest.mark.parametrize("meta", ["", None, "not json", "[1,2]", '{"pos":-1}',
                                  '{"pos":"3"}', '{"open":[1]}'])
def test_foreign_or_broken_metadata_means_record_untouched(meta):
    assert wire.decode_cursor(9, meta) == Cursor(9)


def test_no_committed_offset_is_the_start():
    assert wire.decode_cursor(-1, "") == Cursor()


def test_metadata_stays_within_kafkas_limit():
    many = frozenset(f"{i:016x}" for i in range(1000))
    meta = wire.encode_cursor(Cursor(1, 2, many))
    assert len(meta.encode()) <= wire.MAX_METADATA
    decoded = wire.decode_cursor(1, meta)
    assert decoded.byte_pos == 2 and decoded.open_sessions < many
    assert json.loads(meta)["v"] == 1

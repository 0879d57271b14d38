"""Fetch responses read in place: the records of a pipe without copying
every byte four times on the way.

aiokafka reads a fetch response into a bytes object, copies the records of
each partition out of it, and its C record reader copies each value again.
Reading a backlog, those copies were most of the daemon's CPU
(docs/decisions.md, "fetch responses read in place").  Here the response is
one buffer the socket was read into (``_frames.FetchConnection``); a
partition's records stay a memoryview of it, and a large record's value is
copied once, into the bytes the reader is handed.

Only Fetch v11 (what aiokafka asks brokers from 2.3 on) is read here; a
batch that is compressed, a transaction marker, in the old message format, or
made of many small records goes to aiokafka's C reader, which is faster per
record than Python.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import struct

from aiokafka.record.memory_records import MemoryRecords

# Batches whose records average at least this many bytes are read here; the
# per-record work in Python then costs less than the copy aiokafka's reader
# needs (a bytes object of the whole batch).
LARGE_RECORD = 4096

_RESPONSE_HEAD = struct.Struct(">ihi")  # throttle time, error code, session id
_PARTITION_HEAD = struct.Struct(">ihqqqi")  # partition, error, high watermark,
# last stable offset, log start offset, aborted transactions (count)
_BATCH_HEAD = struct.Struct(">qiibihiqqqhii")  # base offset, length, leader epoch,
# magic, crc, attributes, last offset delta, first and max timestamp, producer
# id and epoch, base sequence, record count
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_COMPRESSION = 0x07
_CONTROL = 0x20


class FetchedRecord:
    """What the fetcher reads of a record (as aiokafka's records offer it)."""

    __slots__ = ("offset", "value", "headers")

    def __init__(self, offset: int, value: bytes | None, headers: list) -> None:
        self.offset = offset
        self.value = value
        self.headers = headers


class FetchResponse:
    """A Fetch v11 response: ``topics`` is [(topic, [(partition, error,
    high watermark, records), ...]), ...], records a memoryview."""

    __slots__ = ("error_code", "session_id", "topics")

    def __init__(self, error_code: int, session_id: int, topics: list) -> None:
        self.error_code = error_code
        self.session_id = session_id
        self.topics = topics


class CorruptResponse(ValueError):
    """A response that ends before its fields do."""


def decode_fetch_v11(body: memoryview) -> FetchResponse:
    """The response after its header (the correlation id)."""
    try:
        _, error, session = _RESPONSE_HEAD.unpack_from(body, 0)
        at = _RESPONSE_HEAD.size
        (count,) = _I32.unpack_from(body, at)
        at += 4
        topics = []
        for _ in range(count):
            (size,) = _I16.unpack_from(body, at)
            at += 2
            topic = str(body[at:at + size], "utf-8")
            at += size
            (partitions,) = _I32.unpack_from(body, at)
            at += 4
            got = []
            for _ in range(partitions):
                partition, code, highwater, _, _, aborted = _PARTITION_HEAD.unpack_from(body, at)
                at += _PARTITION_HEAD.size + 16 * max(aborted, 0) + 4  # + preferred replica
                (size,) = _I32.unpack_from(body, at)
                at += 4
                size = max(size, 0)  # -1: null
                if at + size > len(body):
                    raise CorruptResponse("fetch response cut short in a partition's records")
                got.append((partition, code, highwater, body[at:at + size]))
                at += size
            topics.append((topic, got))
    except struct.error as e:
        raise CorruptResponse(f"fetch response cut short: {e}") from None
    return FetchResponse(error, session, topics)


def read_records(raw, start: int) -> tuple[list, int]:
    """The records of *raw* (a partition's record batches) from offset *start*
    on, and the offset after the last whole batch.  Transaction markers carry
    no data but move the position past them; a batch cut short at the end of
    the response is fetched again next time.

    CRCs are not checked: aiokafka's CRC32C costs ~2 CPU s per GiB read, a
    third of the read path, while the broker checks every batch when it is
    produced and TCP checksums the wire; librdkafka (kcat) does not check by
    default either (check.crcs=false)."""
    out: list = []
    position = start
    at, end_of_all = 0, len(raw)
    while end_of_all - at >= 17:  # base offset, length, leader epoch, magic
        base, length = struct.unpack_from(">qi", raw, at)
        end = at + 12 + length
        if length < 0 or end > end_of_all:
            break
        if raw[at + 16] == 2 and end - at >= _BATCH_HEAD.size:
            head = _BATCH_HEAD.unpack_from(raw, at)
            attributes, last_delta, count = head[5], head[6], head[12]
            if not attributes & (_COMPRESSION | _CONTROL) and length >= count * LARGE_RECORD:
                try:
                    _read_batch(raw, at + _BATCH_HEAD.size, end, base, count, start, out)
                except IndexError:
                    raise CorruptResponse("a record batch cut short inside") from None
                position = max(position, base + last_delta + 1)
                at = end
                continue
        position = max(position, _read_with_aiokafka(bytes(raw[at:end]), start, out))
        at = end
    return out, position


def _read_with_aiokafka(batch: bytes, start: int, out: list) -> int:
    """One batch through aiokafka's C reader; the offset after it."""
    reader = MemoryRecords(batch)
    got = reader.next_batch()
    if got is None:
        raise CorruptResponse("a record batch aiokafka cannot read")
    if not got.is_control_batch:
        out.extend(r for r in got if r.offset >= start)
    return got.next_offset


def _read_batch(raw, at: int, end: int, base: int, count: int, start: int, out: list) -> None:
    """The records of an uncompressed v2 batch (its body from *at* to *end*)."""
    for _ in range(count):
        length, at = _varint(raw, at)
        next_record = at + length
        at += 1  # attributes
        _, at = _varint(raw, at)  # timestamp delta
        delta, at = _varint(raw, at)
        size, at = _varint(raw, at)  # key
        at += max(size, 0)
        size, at = _varint(raw, at)
        if size < 0:
            value = None
        else:
            value = bytes(raw[at:at + size])
            at += size
        pairs, at = _varint(raw, at)
        headers = []
        for _ in range(pairs):
            size, at = _varint(raw, at)
            key = str(raw[at:at + size], "utf-8", "replace")
            at += size
            size, at = _varint(raw, at)
            if size < 0:
                headers.append((key, None))
            else:
                headers.append((key, bytes(raw[at:at + size])))
                at += size
        if next_record > end or at != next_record:
            raise CorruptResponse("a record that does not fit its batch")
        if base + delta >= start:
            out.append(FetchedRecord(base + delta, value, headers))
        at = next_record


def _varint(raw, at: int) -> tuple[int, int]:
    """A zigzag varint at *at*, and where the next field starts."""
    shift = result = 0
    while True:
        byte = raw[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1), at
        shift += 7
        if shift > 63:
            raise CorruptResponse("a varint longer than 10 bytes")

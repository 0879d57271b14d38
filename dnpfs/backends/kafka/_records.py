"""Fetch responses read in place: the records of a pipe without copying
every byte four times on the way.

aiokafka reads a fetch response into a bytes object, copies the records of
each partition out of it, and its C record reader copies each value again.
Reading a backlog, those copies were most of the daemon's CPU
(docs/decisions.md, "fetch responses read in place").  Here the response is
one buffer the socket was read into (``_aiokafka.frames.FetchConnection``); a
partition's records stay a memoryview of it, and a large record's value is
a view of it too when the response's buffer stays as long as anything views
it (``FetchResponse.viewed``), else copied once, into the bytes the reader
is handed.

Only Fetch v11 (what aiokafka asks brokers from 2.3 on) is read here; a
batch that is compressed, in the old message format, or made of many small
records goes to aiokafka's C reader, which is faster per record than Python
(and decompresses with cramjam: every codec Kafka has).

Reads are read_committed: batches of aborted transactions are skipped here,
with the partition's list of aborted transactions, as Kafka's Java consumer
does; transaction markers (control batches) carry no data.

A batch that cannot be read (its CRC does not match, its codec fails, its
records do not fit it) becomes one ``Unreadable`` in place of its records:
the reader gets EIO there, once, and goes on after it (docs/kafka.md,
"Batches that cannot be read").  Nothing else of the response is held up.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import struct

import crc32c
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
_ABORTED = struct.Struct(">qq")  # producer id, first offset
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_COMPRESSION = 0x07
_TRANSACTIONAL = 0x10
_CONTROL = 0x20
_CRC_FROM = 21  # a batch's CRC covers everything from its attributes on
_ABORT_MARKER = 0  # a control record's type (its key's second int16): 0 abort, 1 commit

class FetchedRecord:
    """What the fetcher reads of a record (as aiokafka's records offer it)."""

    __slots__ = ("offset", "value", "headers")

    def __init__(self, offset: int, value: bytes | None, headers: list) -> None:
        self.offset = offset
        self.value = value
        self.headers = headers


class Unreadable:
    """In place of the records of a batch that cannot be read: *offset* is
    its last offset (where its records end, whichever of them a fetch starts
    at), *first* its base offset."""

    __slots__ = ("offset", "first", "reason")

    def __init__(self, first: int, offset: int, reason: str) -> None:
        self.first = first
        self.offset = offset
        self.reason = reason


class FetchResponse:
    """A Fetch v11 response: ``topics`` is [(topic, [(partition, error,
    high watermark, last stable offset, aborted transactions, records), ...]),
    ...]; aborted transactions a list of (producer id, first offset), records
    a memoryview.  *viewed*: that memory stays as long as anything views
    it (else it is reused at the next request: copy what is kept)."""

    __slots__ = ("error_code", "session_id", "topics", "viewed")

    def __init__(self, error_code: int, session_id: int, topics: list,
                 viewed: bool = False) -> None:
        self.error_code = error_code
        self.session_id = session_id
        self.topics = topics
        self.viewed = viewed


class CorruptResponse(ValueError):
    """A response that ends before its fields do."""


def decode_fetch_v11(body: memoryview, viewed: bool = False) -> FetchResponse:
    """The response after its header (the correlation id); *viewed*: see
    ``FetchResponse``."""
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
                partition, code, highwater, stable, _, count = _PARTITION_HEAD.unpack_from(body, at)
                at += _PARTITION_HEAD.size
                aborted = [_ABORTED.unpack_from(body, at + 16 * i) for i in range(count)]
                at += 16 * max(count, 0) + 4  # + preferred replica
                (size,) = _I32.unpack_from(body, at)
                at += 4
                size = max(size, 0)  # -1: null
                if at + size > len(body):
                    raise CorruptResponse("fetch response cut short in a partition's records")
                got.append((partition, code, highwater, stable, aborted, body[at:at + size]))
                at += size
            topics.append((topic, got))
    except struct.error as e:
        raise CorruptResponse(f"fetch response cut short: {e}") from None
    return FetchResponse(error, session, topics, viewed)


def read_records(raw, start: int, aborted=(), check_crcs: bool = True,
                 view: bool = False) -> tuple[list, int]:
    """The records of *raw* (a partition's record batches) from offset *start*
    on, and the offset after the last whole batch.  *aborted*: the response's
    aborted transactions of the partition, (producer id, first offset) each.
    Transaction markers and aborted batches carry no data but move the
    position past them; a batch cut short at the end of the response is
    fetched again next time; a batch that cannot be read is an
    ``Unreadable``.  *check_crcs*: verify each batch's CRC32C (the mount's
    ``check.crcs``); with the CPU's crc32 instruction it costs little of the
    read path (docs/decisions.md, "CRCs checked on reads").  *view*: the
    values of large records are views of *raw*, not copies (*raw* must then
    stay unchanged while they live: ``FetchResponse.viewed``)."""
    out: list = []
    position = start
    pending = sorted(aborted, key=lambda a: a[1])  # by first offset
    aborting: set[int] = set()  # producers whose current transaction was aborted
    for at, end, base in _batch_spans(raw):
        if raw[at + 16] != 2:  # the old message format: no transactions, no CRC32C
            position = max(position, _read_legacy(bytes(raw[at:end]), base, start, out))
            continue
        if end - at < _BATCH_HEAD.size:
            out.append(Unreadable(base, base, "a record batch shorter than its header"))
            position = max(position, base + 1)
            continue
        head = _BATCH_HEAD.unpack_from(raw, at)
        crc, attributes, last_delta, producer, count = head[4], head[5], head[6], head[9], head[12]
        last = base + max(last_delta, 0)
        position = max(position, last + 1)
        batch = raw[at:end]
        if check_crcs and crc32c.crc32c(batch[_CRC_FROM:]) != crc & 0xFFFFFFFF:
            if last >= start:
                out.append(Unreadable(base, last, "CRC mismatch"))
            continue
        if producer >= 0 and (pending or aborting):
            # Even before the fetch position: an abort marker there ends
            # its producer's aborted transaction for the batches after it.
            while pending and pending[0][1] <= last:
                aborting.add(pending.pop(0)[0])
            if attributes & _CONTROL:
                if producer in aborting and _control_type(batch) == _ABORT_MARKER:
                    aborting.discard(producer)  # its aborted transaction ends here
                continue
            if attributes & _TRANSACTIONAL and producer in aborting:
                continue  # a batch of an aborted transaction
        if attributes & _CONTROL or last < start:
            continue  # a transaction marker (no data), or before the fetch position
        try:
            if not attributes & _COMPRESSION and end - at - 12 >= count * LARGE_RECORD:
                got: list = []
                _read_batch(batch, _BATCH_HEAD.size, len(batch), base, count, start, got, view)
            else:
                got = _read_with_aiokafka(bytes(batch), start)
        except Exception as e:  # noqa: BLE001 - any codec's or reader's error: the batch is lost, not the pipe
            out.append(Unreadable(base, last, f"{type(e).__name__}: {e}"))
            continue
        out.extend(got)
    return out, position


def position_after(raw, start: int) -> int | None:
    """The offset after the last whole batch of *raw*, as ``read_records``
    finds it, from the batches' headers alone (no CRC, no records): where a
    fetch sent before *raw* is read may start.  None where only reading the
    batches tells (the old message format, a batch shorter than its header)."""
    position = start
    for at, end, base in _batch_spans(raw):
        if raw[at + 16] != 2 or end - at < _BATCH_HEAD.size:
            return None
        position = max(position, base + max(_BATCH_HEAD.unpack_from(raw, at)[6], 0) + 1)
    return position


def _batch_spans(raw):
    """(start, end, base offset) of each whole batch of *raw*, in order; a
    batch cut short at the end of the response is not one."""
    at, end_of_all = 0, len(raw)
    while end_of_all - at >= 17:  # base offset, length, leader epoch, magic
        base, length = struct.unpack_from(">qi", raw, at)
        end = at + 12 + length
        if length < 0 or end > end_of_all:
            return
        yield at, end, base
        at = end


def _control_type(batch) -> int:
    """The type of a control batch's (first) record: abort, commit, or -1
    for one that cannot be read (taken for no abort)."""
    try:
        at = _BATCH_HEAD.size
        _, at = _varint(batch, at)  # record length
        at += 1  # attributes
        _, at = _varint(batch, at)  # timestamp delta
        _, at = _varint(batch, at)  # offset delta
        _, at = _varint(batch, at)  # key length
        return struct.unpack_from(">hh", batch, at)[1]
    except (struct.error, IndexError, CorruptResponse):
        return -1


def _read_with_aiokafka(batch: bytes, start: int) -> list:
    """The records of one v2 batch through aiokafka's C reader."""
    got = MemoryRecords(batch).next_batch()
    if got is None:
        raise CorruptResponse("a record batch aiokafka cannot read")
    return [r for r in got if r.offset >= start]


def _read_legacy(batch: bytes, base: int, start: int, out: list) -> int:
    """A message set of the old format (magic 0 or 1); the offset after it."""
    try:
        got = MemoryRecords(batch).next_batch()
        if got is None:
            raise CorruptResponse("a message aiokafka cannot read")
        records = list(got)
        after = got.next_offset
    except Exception as e:  # noqa: BLE001 - as in read_records
        out.append(Unreadable(base, base, f"{type(e).__name__}: {e}"))
        return base + 1
    out.extend(r for r in records if r.offset >= start)
    return after


def _read_batch(raw, at: int, end: int, base: int, count: int, start: int, out: list,
                view: bool = False) -> None:
    """The records of an uncompressed v2 batch (its body from *at* to *end*);
    *view*: values as views of *raw*."""
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
            value = raw[at:at + size] if view else bytes(raw[at:at + size])
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

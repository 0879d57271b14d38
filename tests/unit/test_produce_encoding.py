"""Produce requests written in pieces (``_aiokafka.produce.encode``) against aiokafka's
own encoding of the same request: the bytes on the wire must not change."""

from __future__ import annotations

import struct

import pytest
from aiokafka.protocol.produce import ProduceRequest

from dnpfs.backends.kafka._aiokafka.produce import LARGE_BATCH, encode


def aiokafka_frame(request_struct, correlation_id: int, client_id: str) -> bytes:
    # what AIOKafkaConnection.send writes
    header = request_struct.build_request_header(correlation_id=correlation_id,
                                                 client_id=client_id)
    message = header.encode() + request_struct.encode()
    return struct.pack(">i", len(message)) + message


REQUESTS = {
    "one batch": (None, -1, 30_000, [("dnpfs.jobs", [(0, bytearray(b"\x00" * 61 + b"batch"))])]),
    "several topics and partitions": (
        None, 1, 5_000,
        [("a", [(0, bytearray(b"first")), (3, bytearray(1000))]),
         ("pipe.with.dots", [(1, b"bytes too")])]),
    "transactional id, non-ASCII topic": (
        "txn-7", -1, 1, [("caf\u00e9", [(0, bytearray(range(256)))])]),
    "no records for a partition": (None, -1, 30_000, [("t", [(0, None), (1, b"x")])]),
    "no topics": (None, -1, 30_000, []),
    "a large batch": (None, -1, 30_000, [("big", [(0, bytearray(b"\xab" * 1_000_000))])]),
}


@pytest.mark.parametrize("version", [3, 4, 5, 6, 7])
@pytest.mark.parametrize("name", REQUESTS)
def test_pieces_make_aiokafkas_frame(version: int, name: str) -> None:
    request = ProduceRequest(*REQUESTS[name])
    request_struct = request.prepare({ProduceRequest.API_KEY: (version, version)})
    assert request_struct.API_VERSION == version
    pieces = encode(request_struct, 12345, "dnpfs")
    assert b"".join(pieces) == aiokafka_frame(request_struct, 12345, "dnpfs")


def test_large_batches_are_not_copied_small_ones_are_one_piece() -> None:
    large = bytearray(b"\x01" * LARGE_BATCH)
    small = [bytearray(b"\x02" * (LARGE_BATCH - 1)) for _ in range(3)]
    request = ProduceRequest(None, -1, 30_000, [("s", [(0, small[0]), (1, small[1])]),
                                                ("l", [(0, large)]), ("t", [(0, small[2])])])
    request_struct = request.prepare({0: (7, 7)})
    pieces = encode(request_struct, 1, "dnpfs")
    assert [type(p) for p in pieces] == [bytearray, memoryview, bytearray]
    assert pieces[1].obj is large
    assert b"".join(pieces) == aiokafka_frame(request_struct, 1, "dnpfs")

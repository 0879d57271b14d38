"""Record batches whose checksum is computed by the CPU's crc32 instruction.

A record batch carries a CRC32C of everything after its CRC field.  aiokafka's
batch builder (its C extension) computes it in software, at about 1.6 GB/s
on this machine: half a millisecond for each 1 MB batch, on the producer's
thread, between one produce request's answer and the next request, while
the broker waits (docs/decisions.md, "batch checksums in hardware").  The
crc32c package does it at about 24 GB/s where the CPU has the instruction
(SSE 4.2, ARMv8), with the GIL released for large buffers.

``Builder`` is aiokafka's own pure-Python batch builder, the one it uses
without its extension, with only the checksum step replaced: the batch's
bytes are the same (tests/unit/test_batches.py compares them with aiokafka's
extension, byte for byte).
"""

from __future__ import annotations

import struct

import crc32c
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

_CRC = struct.Struct(">I")
# From this size on a value's checksum in software costs more than the Python
# builder's slower append (about 4 µs more per record): batches of small
# records (markers, short lines) stay aiokafka's.  Where the CPU has no crc32
# instruction crc32c is no faster than aiokafka, and Batch is never used.
LARGE = 8 << 10


class Builder(_DefaultRecordBatchBuilderPy):
    def _write_header(self, use_compression_type: bool = True) -> None:
        # As aiokafka's, but for the checksum's function.
        self.HEADER_STRUCT.pack_into(
            self._buffer, 0,
            0,  # base offset: the broker sets it
            len(self._buffer) - self.AFTER_LEN_OFFSET,
            self.NO_PARTITION_LEADER_EPOCH,
            self._magic,
            0,  # the CRC, over what follows it
            self._get_attributes(use_compression_type),
            self._last_offset,
            self._first_timestamp or 0,
            self._max_timestamp or 0,
            self._producer_id,
            self._producer_epoch,
            self._base_sequence,
            self._num_records,
        )
        crc = crc32c.crc32c(memoryview(self._buffer)[self.ATTRIBUTES_OFFSET:])
        _CRC.pack_into(self._buffer, self.CRC_OFFSET, crc)


class Batch(BatchBuilder):
    """What ``producer.create_batch()`` returns, built by ``Builder``: for
    ``producer.send_batch``.  Not transactional (dnpfs's producer never is)."""

    def __init__(self, batch_size: int, compression_type: int) -> None:
        super().__init__(batch_size, compression_type)
        self._builder = Builder(2, compression_type, is_transactional=False, producer_id=-1,
                                producer_epoch=-1, base_sequence=0, batch_size=batch_size)

    def _set_producer_state(self, producer_id, producer_epoch, base_sequence):
        # aiokafka's asserts that its builder is its extension's
        self._builder.set_producer_state(producer_id, producer_epoch, base_sequence)


def new_batch(producer, first: int) -> BatchBuilder:
    """An empty batch for ``producer.send_batch``, to start with a value of
    *first* bytes: a ``Batch`` where it pays, else aiokafka's own."""
    if first < LARGE or not crc32c.hardware_based:
        return producer.create_batch()
    accumulator = producer._message_accumulator
    return Batch(accumulator._batch_size, accumulator._compression_type)

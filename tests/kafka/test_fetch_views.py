"""Records read as views of the fetch response they came in
(docs/decisions.md, "Kafka: records viewed in the fetch response"): a
response's buffer is taken again for a later response only once no record
views it.  A reader slow on one record, while another reader group of the
same pipe on the same mount reads on and the mount fetches response after
response, must still get its own bytes."""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest

from ..util import wait_for

pytestmark = pytest.mark.kafka

RECORD = 128 << 10
RECORDS = 480  # 60 MiB: four responses of 16 MiB and more, past the pool's three


def record(i: int) -> bytes:
    """Record *i*: its number over and over, so that bytes of another record
    (or another place in one) never pass for it."""
    return (i.to_bytes(4, "big") + b"%08d" % i) * (RECORD // 12) + b"\n" * (RECORD % 12)


def test_a_record_a_slow_reader_is_in_keeps_its_bytes_while_later_responses_arrive(
        make_mount, kafka_bootstrap):
    prefix = f"fv{uuid.uuid4().hex[:8]}."
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", prefix]
    writer = make_mount(args, name="writer")
    os.mkfifo(writer / "v")
    try:
        reader = make_mount(args, name="reader")  # --fetch-mib 64: three pooled responses
        wait_for(lambda: os.path.exists(reader / "v"), 30, what="pipe")
        with open(reader / "v@slow", "rb", buffering=0) as slow, \
                open(reader / "v@fast", "rb", buffering=0) as fast:
            with open(writer / "v", "wb", buffering=0) as w:
                for i in range(RECORDS):
                    assert w.write(record(i)) == RECORD
            expected = b"".join(record(i) for i in range(RECORDS))
            # The slow group takes 100 bytes of the first record and waits
            # there, its member's buffer full of records of the first
            # responses; the fast one reads the whole pipe meanwhile.
            got_slow = slow.read(100)
            got_fast = bytearray()
            while chunk := fast.read(1 << 20):
                got_fast += chunk
            assert got_fast == expected
            while chunk := slow.read(1 << 20):
                got_slow += chunk
            assert len(got_slow) == len(expected)
            if got_slow != expected:
                at = next(i for i in range(len(expected)) if got_slow[i] != expected[i])
                pytest.fail(f"the slow reader got other bytes from byte {at} (record"
                            f" {at // RECORD}): {bytes(got_slow[at:at + 12])!r}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(writer / "v")  # give the shared broker its disk back

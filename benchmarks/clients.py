"""The plain aiokafka reference: what a Python program gets from Kafka without dnpfs.

    python -m benchmarks.clients produce  BOOTSTRAP TOPIC FILE --record B
    python -m benchmarks.clients consume  BOOTSTRAP TOPIC --bytes N [--ready]
    python -m benchmarks.clients latency  BOOTSTRAP TOPIC --count N --size B

The client settings are dnpfs's own: the producer's are copied from
dnpfs/backends/kafka/_appender.py (idempotent, acks=all, linger 1 ms, batches of
its BATCH_BYTES), except that the latency producer does not linger: dnpfs sends
a write to an idle pipe at once (``lingers``), and every message of the latency
scenario is one.  dnpfs also holds a stream of many small writes until 5 ms
after its previous append (``holds_back``); this producer's send() per line
lingers 1 ms only.  The consumer fetches as the daemon's fetcher does, with the sizes
imported from dnpfs/backends/kafka/_fetcher.py (16 MiB per partition and per
response, no CRC check) and aiokafka.conn.READER_LIMIT raised to match.
This consumer assigns the partition itself (no group).  So the difference
between dnpfs and this script is dnpfs itself (FUSE, trio, the bridge to the
asyncio thread, sessions and cursors, and its reading fetch responses in place,
dnpfs/backends/kafka/_aiokafka/frames.py), not the client's tuning.  Records carry no
headers (dnpfs adds two small ones).

Each command prints one JSON line.  Times are CLOCK_MONOTONIC and measured
from after the client connected: the dnpfs daemon is connected before a
benchmark starts too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from dnpfs.backends.kafka._appender import BATCH_BYTES

PRODUCER = dict(acks="all", enable_idempotence=True, linger_ms=1, max_batch_size=BATCH_BYTES,
                max_request_size=1_064_000, request_timeout_ms=30_000)


def _producer(bootstrap: str, **settings):
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="bench-ref",
                            **{**PRODUCER, **settings})


def _consumer(bootstrap: str):
    from aiokafka import AIOKafkaConsumer, conn

    from dnpfs.backends.kafka._fetcher import FETCH_WAIT_MS, PARTITION_BYTES, RESPONSE_BYTES

    # The tuning a careful aiokafka user would do: its StreamReader's 64 KiB
    # limit stops and restarts reading the socket every 128 KiB of a 4 MiB
    # response.  (dnpfs reads fetch responses without a StreamReader.)
    conn.READER_LIMIT = max(conn.READER_LIMIT, PARTITION_BYTES)

    return AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="bench-ref",
                            enable_auto_commit=False, auto_offset_reset="earliest",
                            max_partition_fetch_bytes=PARTITION_BYTES,
                            fetch_max_bytes=RESPONSE_BYTES, fetch_max_wait_ms=FETCH_WAIT_MS,
                            check_crcs=False)


async def produce(args) -> dict:
    """Every *record* bytes of FILE as one record, then wait for every ack."""
    producer = _producer(args.bootstrap)
    await producer.start()
    try:
        with open(args.file, "rb") as f:
            data = f.read()
        view = memoryview(data)
        start = time.monotonic()
        futures = []
        for at in range(0, len(data), args.record):
            futures.append(await producer.send(args.topic, bytes(view[at:at + args.record]),
                                               partition=0))
        await asyncio.gather(*futures)
        end = time.monotonic()
    finally:
        await producer.stop()
    return {"start": start, "end": end, "records": len(futures), "bytes": len(data)}


async def consume(args) -> dict:
    """From the beginning of partition 0 until *bytes* arrived."""
    from aiokafka.structs import TopicPartition

    consumer = _consumer(args.bootstrap)
    await consumer.start()
    tp = TopicPartition(args.topic, 0)
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        await consumer.position(tp)
        if args.ready:
            print(json.dumps({"ready": True}), flush=True)
        start = time.monotonic()
        got = records = 0
        first = None
        while got < args.bytes:
            batches = await consumer.getmany(tp, timeout_ms=1000, max_records=100_000)
            for r in batches.get(tp, ()):
                if first is None:
                    first = time.monotonic()
                got += len(r.value or b"") + args.add
                records += 1
        last = time.monotonic()
    finally:
        await consumer.stop()
    return {"start": start, "first": first, "last": last, "bytes": got, "records": records}


def latency(args) -> dict:
    """Produce-to-consume time of one record, the consumer already assigned
    and waiting, one record at a time.  Two processes, like two dnpfs mounts:
    the parent produces, a forked child consumes and reports."""
    got_r, got_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(got_r)
        code = 1
        try:
            out = asyncio.run(_latency_consumer(args, got_w))
            print(json.dumps(out), flush=True)
            code = 0
        finally:
            os._exit(code)
    os.close(got_w)
    try:
        asyncio.run(_latency_producer(args, got_r))
    finally:
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("latency consumer failed")
    return {}


async def _latency_consumer(args, got_w: int) -> dict:
    from aiokafka.structs import TopicPartition

    consumer = _consumer(args.bootstrap)
    await consumer.start()
    tp = TopicPartition(args.topic, 0)
    samples = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        os.write(got_w, b"r")
        for i in range(args.warmup + args.count):
            record = await consumer.getone()
            now = time.monotonic_ns()
            sent = int(record.value[:20])
            if i >= args.warmup:
                samples.append((now - sent) / 1000)
            os.write(got_w, b".")
    finally:
        await consumer.stop()
    return {"samples_us": samples}


async def _latency_producer(args, got_r: int) -> None:
    loop = asyncio.get_running_loop()
    producer = _producer(args.bootstrap, linger_ms=0)  # as dnpfs for an idle pipe
    await producer.start()
    arrived = asyncio.Queue()
    loop.add_reader(got_r, lambda: arrived.put_nowait(os.read(got_r, 64)))
    pad = b"x" * (args.size - 21) + b"\n"
    try:
        await arrived.get()  # the consumer is assigned and positioned
        for _ in range(args.warmup + args.count):
            await asyncio.sleep(args.gap)
            await producer.send(args.topic, b"%020d" % time.monotonic_ns() + pad, partition=0)
            chunk = b""
            while not chunk:
                chunk = await arrived.get()
    finally:
        loop.remove_reader(got_r)
        await producer.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("produce")
    pr.add_argument("bootstrap")
    pr.add_argument("topic")
    pr.add_argument("file")
    pr.add_argument("--record", type=int, default=128 << 10)
    co = sub.add_parser("consume")
    co.add_argument("bootstrap")
    co.add_argument("topic")
    co.add_argument("--bytes", type=int, required=True)
    co.add_argument("--add", type=int, default=0, help="count this many bytes more per record")
    co.add_argument("--ready", action="store_true", help='print {"ready": true} once assigned')
    la = sub.add_parser("latency")
    la.add_argument("bootstrap")
    la.add_argument("topic")
    la.add_argument("--count", type=int, default=1000)
    la.add_argument("--warmup", type=int, default=20)
    la.add_argument("--size", type=int, default=100)
    la.add_argument("--gap", type=float, default=0.002)
    args = p.parse_args()
    if args.cmd == "latency":
        latency(args)
        return
    out = asyncio.run({"produce": produce, "consume": consume}[args.cmd](args))
    print(json.dumps(out), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

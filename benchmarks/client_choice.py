"""aiokafka or confluent-kafka for dnpfs's data path?  One run, same broker,
same bytes: 256 MiB in 128 KiB records produced (acks=all, idempotent) and
consumed back, by aiokafka, by confluent-kafka (librdkafka) and by kcat.

    python -m benchmarks.client_choice [--mib 256]      (confluent-kafka must be
                                                          importable: pip install confluent-kafka)

Prints MiB/s and ratios to kcat; docs/decisions.md quotes the result.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
import uuid

RECORD = 128 << 10


def confluent(bootstrap: str, topic: str, n: int, payload: bytes) -> tuple[float, float]:
    from confluent_kafka import Consumer, Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 1, "message.max.bytes": 2_000_000})
    start = time.monotonic()
    for _ in range(n):
        while True:
            try:
                p.produce(topic, payload, partition=0)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush()
    write = time.monotonic() - start
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"cc-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    start, got = time.monotonic(), 0
    while got < n:
        for m in c.consume(1000, 1.0):
            if m.error() is None:
                got += 1
    read = time.monotonic() - start
    c.close()
    return write, read


def aiokafka_run(bootstrap: str, topic: str, n: int, payload: bytes) -> tuple[float, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def go():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=1, max_request_size=2_000_000)
        await p.start()
        start = time.monotonic()
        futs = [await p.send(topic, payload, partition=0) for _ in range(n)]
        await asyncio.gather(*futs)
        write = time.monotonic() - start
        await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             group_id=f"ak-{uuid.uuid4().hex}", enable_auto_commit=False)
        await c.start()
        start, got = time.monotonic(), 0
        while got < n:
            for records in (await c.getmany(timeout_ms=1000, max_records=1000)).values():
                got += len(records)
        read = time.monotonic() - start
        await c.stop()
        return write, read

    return asyncio.run(go())


def kcat_run(bootstrap: str, topic: str, n: int, payload: bytes) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i in range(n):
            f = os.path.join(d, f"{i:06d}")
            with open(f, "wb") as out:
                out.write(payload)
            files.append(f)
        start = time.monotonic()
        subprocess.run(["kcat", "-b", bootstrap, "-P", "-t", topic, "-p", "0",
                        "-X", "acks=all", "-X", "enable.idempotence=true", *files], check=True)
        write = time.monotonic() - start
    start = time.monotonic()
    subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-c", str(n),
                    "-q", "-f", ""], check=True, stdout=subprocess.DEVNULL)
    read = time.monotonic() - start
    return write, read


def create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def go():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await admin.close()
        await asyncio.sleep(1)  # leader election

    asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--bootstrap", default="127.0.0.1:39092")
    args = ap.parse_args()
    n = args.mib * (1 << 20) // RECORD
    payload = os.urandom(RECORD)
    results = {}
    for name, fn in (("kcat", kcat_run), ("aiokafka", aiokafka_run),
                     ("confluent-kafka", confluent)):
        topic = f"client-choice-{name}-{uuid.uuid4().hex[:6]}"
        create_topic(args.bootstrap, topic)
        w, r = fn(args.bootstrap, topic, n, payload)
        results[name] = (args.mib / w, args.mib / r)
        print(f"{name:16s} write {args.mib / w:8.1f} MiB/s   read {args.mib / r:8.1f} MiB/s",
              flush=True)
    kw, kr = results["kcat"]
    for name in ("aiokafka", "confluent-kafka"):
        w, r = results[name]
        print(f"{name:16s} / kcat: write {w / kw:.2f}x  read {r / kr:.2f}x")


if __name__ == "__main__":
    main()

"""Produce requests of at most REQUEST_BYTES (``_aiokafka.produce.cap_requests``):
aiokafka's own accumulator, filled as the producer fills it and drained as
its sender drains it, with the cap installed."""

from __future__ import annotations

import asyncio

from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.structs import TopicPartition

from dnpfs.backends.kafka._appender import BATCH_BYTES, REQUEST_BYTES
from dnpfs.backends.kafka._aiokafka.produce import cap_requests

FULL = 990_000  # one value that nearly fills a batch, as a 128 KiB dd does in 7 writes


class Leaders:
    """What the accumulator asks of cluster metadata: a partition's leader."""

    def __init__(self, leaders: dict[TopicPartition, int]) -> None:
        self.leaders = leaders

    def leader_for_partition(self, tp: TopicPartition) -> int | None:
        return self.leaders.get(tp)


def pipes(n: int) -> list[TopicPartition]:
    return [TopicPartition(f"dnpfs.p{i}", 0) for i in range(n)]


async def accumulator(leaders: dict[TopicPartition, int], limit: int = REQUEST_BYTES):
    acc = MessageAccumulator(Leaders(leaders), BATCH_BYTES, 0, 30, linger_ms=0)
    cap_requests(acc, limit)
    return acc


async def write(acc, tps, size: int = FULL) -> None:
    for tp in tps:
        await acc.add_message(tp, None, b"v" * size, timeout=1)


def drained(acc, in_flight=frozenset()) -> dict[int, list[TopicPartition]]:
    nodes, unknown = acc.drain_by_nodes(ignore_nodes=set(in_flight))
    assert not unknown
    return {node: list(batches) for node, batches in nodes.items()}


def request_bytes(acc_nodes) -> int:
    return sum(len(batch.get_data_buffer()) for batch in acc_nodes.values())


def test_64_pipes_go_eight_batches_per_request_each_once_in_order() -> None:
    async def main():
        tps = pipes(64)
        acc = await accumulator(dict.fromkeys(tps, 1))
        await write(acc, tps)
        requests = []
        while acc._batches:
            nodes, _ = acc.drain_by_nodes(ignore_nodes=set())
            assert request_bytes(nodes[1]) <= REQUEST_BYTES
            requests.append(list(nodes[1]))
        return tps, requests

    tps, requests = asyncio.run(main())
    assert [len(r) for r in requests] == [8] * 8
    assert [tp for r in requests for tp in r] == tps


def test_a_pipe_written_again_waits_behind_the_others() -> None:
    async def main():
        tps = pipes(20)
        acc = await accumulator(dict.fromkeys(tps, 1))
        await write(acc, tps)
        first = drained(acc)[1]
        await write(acc, first[:1])  # pipe 0 has its next batch
        return tps, first, drained(acc)[1], drained(acc)[1]

    tps, first, second, third = asyncio.run(main())
    assert first == tps[:8]
    assert second == tps[8:16]
    assert third == tps[16:] + tps[:1]


def test_small_batches_fill_a_request_and_a_large_one_still_goes() -> None:
    async def main():
        tps = pipes(30)
        acc = await accumulator(dict.fromkeys(tps, 1), limit=500_000)
        await write(acc, tps[:1], size=FULL)  # larger than the limit: alone
        await write(acc, tps[1:], size=100_000)
        return tps, drained(acc)[1], drained(acc)[1], drained(acc)[1]

    tps, big, small, rest = asyncio.run(main())
    assert big == tps[:1]
    assert small == tps[1:5]  # four batches of ~100 kB fit in 500,000 bytes, five do not
    assert rest == tps[5:9]


def test_each_broker_has_its_own_room() -> None:
    async def main():
        tps = pipes(24)
        acc = await accumulator({tp: 1 + i % 2 for i, tp in enumerate(tps)})
        await write(acc, tps)
        return tps, drained(acc)

    tps, nodes = asyncio.run(main())
    assert nodes[1] == tps[0:16:2]
    assert nodes[2] == tps[1:17:2]


def test_a_broker_with_a_request_in_flight_is_drained_when_it_is_answered() -> None:
    async def main():
        tps = pipes(24)
        acc = await accumulator({tp: 1 if i < 12 else 2 for i, tp in enumerate(tps)})
        await write(acc, tps)
        return tps, drained(acc, in_flight={1}), drained(acc)

    tps, while_busy, after = asyncio.run(main())
    assert while_busy == {2: tps[12:20]}
    assert after == {1: tps[0:8], 2: tps[20:24]}

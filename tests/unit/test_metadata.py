"""The hand-written Metadata decoder against aiokafka's own, on the same bytes."""

from __future__ import annotations

import random
from io import BytesIO

import pytest
from aiokafka.protocol.metadata import MetadataResponse_v5

from dnpfs.backends.kafka._metadata import _Leaders, decode_leaders


def response(topics, brokers=((1, "b1.example", 9092, "rack-a"), (2, "b2", 9093, None)),
             cluster_id="c-1"):
    return MetadataResponse_v5(
        throttle_time_ms=7, brokers=list(brokers), cluster_id=cluster_id, controller_id=1,
        topics=topics).encode()


def partition(number, leader, replicas=(1, 2), error=0):
    return (error, number, leader, list(replicas), list(replicas[:1]), [])


def aiokafka_view(data: bytes) -> dict[str, int]:
    """What dnpfs read before: aiokafka's decoder, then the same selection."""
    found = {}
    for t in MetadataResponse_v5.decode(BytesIO(data)).to_object()["topics"]:
        if t["error_code"] in (0, 5) and not t["is_internal"]:
            found[t["topic"]] = next(
                (p["leader"] for p in t["partitions"] if p["partition"] == 0), -1)
    return found


def test_leaders_of_partition_zero_of_existing_user_topics():
    data = response([
        (0, "p.jobs", False, [partition(1, 2), partition(0, 1)]),  # partition 0 not first
        (5, "p.new", False, [partition(0, -1, error=5)]),  # exists, no leader yet
        (3, "p.gone", False, []),  # UNKNOWN_TOPIC_OR_PARTITION: not a topic
        (0, "__consumer_offsets", True, [partition(0, 1)]),
        (0, "p.ünïcode", False, [partition(0, 2, replicas=())]),
        (0, "p.nopart0", False, [partition(3, 1)]),
    ])
    assert decode_leaders(data) == aiokafka_view(data) == {
        "p.jobs": 1, "p.new": -1, "p.ünïcode": 2, "p.nopart0": -1}


def test_null_strings_and_a_cluster_without_topics():
    data = response([], brokers=[(1, "h", 1, None)], cluster_id=None)
    assert decode_leaders(data) == aiokafka_view(data) == {}


def test_many_random_topics_decode_as_aiokafka_decodes_them():
    rng = random.Random(5)
    topics = []
    for i in range(500):
        parts = [partition(n, rng.choice([-1, 1, 2, 3]), replicas=tuple(range(rng.randint(0, 4))))
                 for n in rng.sample(range(8), rng.randint(0, 5))]
        topics.append((rng.choice([0, 0, 0, 5, 3]), f"t{i}-" + "x" * rng.randint(0, 200),
                       rng.random() < 0.05, parts))
    data = response(topics)
    assert decode_leaders(data) == aiokafka_view(data)


def test_as_aiokafka_calls_it_after_the_response_header():
    body = response([(0, "p.a", False, [partition(0, 3)])])
    buffer = BytesIO(b"\x00\x00\x00\x2a" + body)
    buffer.read(4)  # conn.py has read the correlation id
    assert _Leaders.decode(buffer) == {"p.a": 3}


def test_a_truncated_or_padded_answer_is_an_error_not_a_wrong_list():
    data = response([(0, "p.a", False, [partition(0, 3)])])
    with pytest.raises(Exception):
        decode_leaders(data[:-3])
    with pytest.raises(ValueError):
        decode_leaders(data + b"\x00")

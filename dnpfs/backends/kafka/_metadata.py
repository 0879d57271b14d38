"""Which topics exist and who leads them: a lean Metadata request.

Catalog.refresh asks for every topic of the cluster each REFRESH_INTERVAL;
that is how a pipe made on another mount shows within a second.  aiokafka
decodes such an answer into nested Python objects: on a broker with 2,000
topics that cost 59-63 ms of CPU a time, 7 % of a core per mount, spent on
the thread that serves every read and write.  This module walks the same
bytes with struct.unpack_from and keeps two fields per topic: 6 ms
(docs/decisions.md, "the topic list is decoded by hand").

Only Metadata v5 is decoded: every broker since Kafka 1.0 (2017) answers it.
"""

from __future__ import annotations

import struct
from io import BytesIO

from aiokafka.errors import IncompatibleBrokerVersion
from aiokafka.protocol.api import Request
from aiokafka.protocol.metadata import MetadataRequest_v5

from ...errors import StoreError

LEADER_NOT_AVAILABLE = 5  # the topic exists; its partition has no leader yet

_i16 = struct.Struct(">h").unpack_from
_i32 = struct.Struct(">i").unpack_from
_topic_head = struct.Struct(">hh").unpack_from  # error_code, length of the name
_topic_tail = struct.Struct(">bi").unpack_from  # is_internal, number of partitions
_partition = struct.Struct(">hiii").unpack_from  # error_code, partition, leader, replicas
_PARTITION = 14


def decode_leaders(data: bytes) -> dict[str, int]:
    """{topic: leader of partition 0 (-1: none yet)} from a v5 Metadata
    response body (after the response header), for existing non-internal
    topics.  (A length of -1 is a null string or array: it skips nothing.)"""
    pos = 4  # throttle_time_ms
    (brokers,) = _i32(data, pos)
    pos += 4
    for _ in range(brokers):
        (n,) = _i16(data, pos + 4)  # after node_id: host
        pos += 6 + max(n, 0) + 4  # ... and port
        (n,) = _i16(data, pos)
        pos += 2 + max(n, 0)  # rack
    (n,) = _i16(data, pos)
    pos += 2 + max(n, 0) + 4  # cluster_id, controller_id
    found: dict[str, int] = {}
    (topics,) = _i32(data, pos)
    pos += 4
    for _ in range(topics):
        error, n = _topic_head(data, pos)
        pos += 4
        name = data[pos : pos + n].decode("utf-8", "replace")
        internal, partitions = _topic_tail(data, pos + n)
        pos += n + 5
        leader = -1
        for _ in range(partitions):
            _, partition, leader_id, n = _partition(data, pos)
            if partition == 0:
                leader = leader_id
            pos += _PARTITION + 4 * n if n > 0 else _PARTITION  # replicas
            (n,) = _i32(data, pos)
            pos += 4 + 4 * n if n > 0 else 4  # isr
            (n,) = _i32(data, pos)
            pos += 4 + 4 * n if n > 0 else 4  # offline_replicas
        if error in (0, LEADER_NOT_AVAILABLE) and not internal:
            found[name] = leader
    if pos != len(data):
        raise ValueError(f"Metadata response: {len(data) - pos} bytes left over")
    return found


class _Leaders:
    """Stands where aiokafka expects a response class: conn.py calls
    ``RESPONSE_TYPE.decode(buffer)`` with the body after the header."""

    @staticmethod
    def decode(buffer: BytesIO) -> dict[str, int]:
        return decode_leaders(buffer.read())


class _LeadersRequest_v5(MetadataRequest_v5):
    RESPONSE_TYPE = _Leaders  # type: ignore[assignment]


class _LeadersRequest(Request[_LeadersRequest_v5]):
    API_KEY = 3

    def __init__(self, topics: list[str] | None) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_LeadersRequest_v5]) -> _LeadersRequest_v5:
        return request_struct_class(self._topics, False)  # never auto-create a topic


async def leaders(client, node, topics: list[str] | None) -> dict[str, int]:
    """Ask ``node`` about ``topics`` (None: every topic); see decode_leaders."""
    try:
        return await client.send(node, _LeadersRequest(topics))
    except (IncompatibleBrokerVersion, NotImplementedError) as e:
        raise StoreError("the Kafka broker is too old: dnpfs needs Kafka 1.0 or later"
                         " (Metadata v5)") from e

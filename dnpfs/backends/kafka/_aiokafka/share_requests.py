"""The share-group requests of KIP-932 in aiokafka's protocol classes:
ShareGroupHeartbeat (76) v1, ShareFetch (78) v2 and ShareAcknowledge (79) v2,
field for field as Kafka's clients/src/main/resources/common/message/*.json
(4.2 and later: v2 adds the acquire mode, so a fetch can ask for exactly N
records instead of whole batches).

aiokafka has no share consumer; these use only its public protocol types
(``Request``, ``RequestStruct``, the compact types), so nothing here is
listed in ``INTERNALS``.
"""

from __future__ import annotations

import struct
import uuid
from io import BytesIO

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    AbstractType, Array, Boolean, CompactArray, CompactBytes, CompactString, Int8, Int16,
    Int32, Int64, Schema, String, TaggedFields,
)

HEARTBEAT, FETCH, ACKNOWLEDGE = 76, 78, 79

# Acknowledge types (AcknowledgementBatch.AcknowledgeTypes); RENEW (v2, KIP-1222)
# extends a record's acquisition lock, in a request of renewals alone.
ACCEPT, RELEASE, REJECT, RENEW = 1, 2, 3, 4
# ShareFetch v2 ShareAcquireMode: 1 = record limit (MaxRecords is strict)
RECORD_LIMIT = 1


class Uuid(AbstractType[uuid.UUID]):
    @classmethod
    def encode(cls, value: uuid.UUID) -> bytes:
        return value.bytes

    @classmethod
    def decode(cls, data: BytesIO) -> uuid.UUID:
        raw = data.read(16)
        if len(raw) != 16:
            raise ValueError("Buffer underrun decoding a UUID")
        return uuid.UUID(bytes=raw)


class NullableStruct(AbstractType):
    """A nullable struct field of a flexible version: int8 -1 (null) or 1, then the struct."""

    def __init__(self, *fields) -> None:
        self.schema = Schema(*fields)

    def encode(self, value) -> bytes:
        if value is None:
            return Int8.encode(-1)
        return Int8.encode(1) + self.schema.encode(value)

    def decode(self, data: BytesIO):
        if Int8.decode(data) < 0:
            return None
        return self.schema.decode(data)

    def repr(self, value) -> str:
        return "null" if value is None else self.schema.repr(value)


_STR = CompactString("utf-8")
_TAGS = ("tags", TaggedFields)
_LEADER = Schema(("leader_id", Int32), ("leader_epoch", Int32), _TAGS)
_ENDPOINTS = CompactArray(("node_id", Int32), ("host", _STR), ("port", Int32),
                          ("rack", _STR), _TAGS)
_ACK_BATCHES = CompactArray(("first_offset", Int64), ("last_offset", Int64),
                            ("acknowledge_types", CompactArray(Int8)), _TAGS)
# The topics of a ShareFetch or ShareAcknowledge: their acknowledgements.
_ACK_TOPICS = CompactArray(
    ("topic_id", Uuid),
    ("partitions", CompactArray(("partition_index", Int32),
                                ("acknowledgement_batches", _ACK_BATCHES), _TAGS)),
    _TAGS)


# -- ShareGroupHeartbeat v1 ------------------------------------------------------
class ShareGroupHeartbeatResponse_v1(Response):
    API_KEY = HEARTBEAT
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", _STR),
        ("member_id", _STR),
        ("member_epoch", Int32),
        ("heartbeat_interval_ms", Int32),
        ("assignment", NullableStruct(
            ("topic_partitions", CompactArray(("topic_id", Uuid), ("partitions", CompactArray(Int32)),
                                              _TAGS)),
            _TAGS)),
        _TAGS,
    )


class ShareGroupHeartbeatRequest_v1(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = HEARTBEAT
    API_VERSION = 1
    RESPONSE_TYPE = ShareGroupHeartbeatResponse_v1
    SCHEMA = Schema(
        ("group_id", _STR),
        ("member_id", _STR),
        ("member_epoch", Int32),
        ("rack_id", _STR),
        ("subscribed_topic_names", CompactArray(_STR)),
        _TAGS,
    )


class ShareGroupHeartbeatRequest(Request[ShareGroupHeartbeatRequest_v1]):
    """Join (epoch 0), stay (the epoch the coordinator gave) or leave (-1).
    *topics*: None when unchanged since the last heartbeat."""

    API_KEY = HEARTBEAT

    def __init__(self, group: str, member: str, epoch: int, topics: list[str] | None) -> None:
        self._args = (group, member, epoch, None, topics, {})

    def build(self, request_struct_class):
        return request_struct_class(*self._args)


# -- ShareFetch v2 -----------------------------------------------------------------
class ShareFetchResponse_v2(Response):
    API_KEY = FETCH
    API_VERSION = 2
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", _STR),
        ("acquisition_lock_timeout_ms", Int32),
        ("responses", CompactArray(
            ("topic_id", Uuid),
            ("partitions", CompactArray(
                ("partition_index", Int32),
                ("error_code", Int16),
                ("error_message", _STR),
                ("acknowledge_error_code", Int16),
                ("acknowledge_error_message", _STR),
                ("current_leader", _LEADER),
                ("records", CompactBytes),
                ("acquired_records", CompactArray(
                    ("first_offset", Int64), ("last_offset", Int64), ("delivery_count", Int16),
                    _TAGS)),
                _TAGS)),
            _TAGS)),
        ("node_endpoints", _ENDPOINTS),
        _TAGS,
    )


class ShareFetchRequest_v2(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = FETCH
    API_VERSION = 2
    RESPONSE_TYPE = ShareFetchResponse_v2
    SCHEMA = Schema(
        ("group_id", _STR),
        ("member_id", _STR),
        ("share_session_epoch", Int32),
        ("max_wait_ms", Int32),
        ("min_bytes", Int32),
        ("max_bytes", Int32),
        ("max_records", Int32),
        ("batch_size", Int32),
        ("share_acquire_mode", Int8),
        ("is_renew_ack", Boolean),
        ("topics", _ACK_TOPICS),
        ("forgotten_topics_data", CompactArray(("topic_id", Uuid),
                                               ("partitions", CompactArray(Int32)), _TAGS)),
        _TAGS,
    )


def ack_batches(acks: list[tuple[int, int]]) -> list[tuple]:
    """AcknowledgementBatches for (offset, type) pairs: a batch per run of
    consecutive offsets of one type (a streaming reader's records end in
    runs), each with that one type for all of its offsets."""
    batches: list[tuple] = []
    for offset, kind in sorted(set(acks)):
        if batches and batches[-1][1] == offset - 1 and batches[-1][2] == [kind]:
            batches[-1] = (batches[-1][0], offset, [kind], {})
        else:
            batches.append((offset, offset, [kind], {}))
    return batches


class ShareFetchRequest(Request[ShareFetchRequest_v2]):
    """Fetch (and acquire) up to *max_records* records of partition 0 of
    *topic_id*, acknowledging *acks* ((offset, type) pairs) on the way.
    *max_records* 0: acknowledge only."""

    API_KEY = FETCH

    def __init__(self, group: str, member: str, epoch: int, topic_id: uuid.UUID,
                 acks: list[tuple[int, int]], max_records: int, max_wait_ms: int,
                 max_bytes: int, forget: bool = False) -> None:
        topics = [] if forget else [(topic_id, [(0, ack_batches(acks), {})], {})]
        forgotten = [(topic_id, [0], {})] if forget else []
        self._args = (group, member, epoch, max_wait_ms, 1 if max_records else 0, max_bytes,
                      max_records, max(max_records, 1), RECORD_LIMIT, False, topics, forgotten,
                      {})

    def build(self, request_struct_class):
        struct = request_struct_class(*self._args)
        # On a ``frames.FetchConnection`` (``_own_connection``) the response
        # is read straight into a buffer of its size rather than through
        # aiokafka's StreamReader: one copy here, not four.
        struct.decode_frame = _decode_share_fetch
        return struct


class ShareFetched:
    """A ShareFetch v2 response as ``_decode_share_fetch`` reads it: the
    fields dnpfs reads, shaped as aiokafka's ``ShareFetchResponse_v2``'s
    (``responses``: (topic id, partitions, tags), a partition as its
    SCHEMA orders it, the records a memoryview of the frame)."""

    __slots__ = ("error_code", "error_message", "responses")

    def __init__(self, error_code: int, error_message: str | None, responses: list) -> None:
        self.error_code = error_code
        self.error_message = error_message
        self.responses = responses


_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_RANGE = struct.Struct(">qqh")  # first offset, last offset, delivery count


def _decode_share_fetch(body: memoryview) -> ShareFetched:
    """A ShareFetch v2 response after its correlation id, read in place:
    aiokafka's decoder copied a window of records twice (BytesIO, then
    CompactBytes), a sixth of the loop's time during a ``cat``.  *body* is
    the frame buffer, reused once the next request is sent: the records are
    a memoryview of it, read (and their values copied) before that
    (``ShareReader._fetch_some``)."""
    try:
        at = _skip_tags(body, 0)  # the response header's
        error_code = _I16.unpack_from(body, at + 4)[0]
        error_message, at = _string(body, at + 6)
        at += 4  # acquisition lock timeout
        responses = []
        count, at = _uvarint(body, at)
        for _ in range(count - 1):
            topic_id = uuid.UUID(bytes=bytes(body[at:at + 16]))
            at += 16
            partitions = []
            n, at = _uvarint(body, at)
            for _ in range(n - 1):
                index = _I32.unpack_from(body, at)[0]
                code = _I16.unpack_from(body, at + 4)[0]
                message, at = _string(body, at + 6)
                ack_code = _I16.unpack_from(body, at)[0]
                ack_message, at = _string(body, at + 2)
                at = _skip_tags(body, at + 8)  # current leader: id, epoch, tags
                size, at = _uvarint(body, at)
                raw = None
                if size:
                    if at + size - 1 > len(body):
                        raise ValueError("records cut short")
                    raw = body[at:at + size - 1]
                    at += size - 1
                ranges = []
                r, at = _uvarint(body, at)
                for _ in range(r - 1):
                    ranges.append((*_RANGE.unpack_from(body, at), {}))
                    at = _skip_tags(body, at + _RANGE.size)
                at = _skip_tags(body, at)
                partitions.append((index, code, message, ack_code, ack_message, None, raw,
                                   ranges, {}))
            at = _skip_tags(body, at)
            responses.append((topic_id, partitions, {}))
    except (struct.error, IndexError, ValueError) as e:
        raise ValueError(f"a ShareFetch response that cannot be read: {e}") from None
    return ShareFetched(error_code, error_message, responses)


def _uvarint(raw, at: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = raw[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, at
        shift += 7
        if shift > 35:
            raise ValueError("a varint longer than 5 bytes")


def _string(raw, at: int) -> tuple[str | None, int]:
    """A compact nullable string."""
    size, at = _uvarint(raw, at)
    if not size:
        return None, at
    return str(raw[at:at + size - 1], "utf-8"), at + size - 1


def _skip_tags(raw, at: int) -> int:
    count, at = _uvarint(raw, at)
    for _ in range(count):
        _, at = _uvarint(raw, at)
        size, at = _uvarint(raw, at)
        at += size
    return at


# -- ShareAcknowledge v2 -------------------------------------------------------------
class ShareAcknowledgeResponse_v2(Response):
    API_KEY = ACKNOWLEDGE
    API_VERSION = 2
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", _STR),
        ("acquisition_lock_timeout_ms", Int32),
        ("responses", CompactArray(
            ("topic_id", Uuid),
            ("partitions", CompactArray(("partition_index", Int32), ("error_code", Int16),
                                        ("error_message", _STR), ("current_leader", _LEADER),
                                        _TAGS)),
            _TAGS)),
        ("node_endpoints", _ENDPOINTS),
        _TAGS,
    )


class ShareAcknowledgeRequest_v2(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = ACKNOWLEDGE
    API_VERSION = 2
    RESPONSE_TYPE = ShareAcknowledgeResponse_v2
    SCHEMA = Schema(
        ("group_id", _STR),
        ("member_id", _STR),
        ("share_session_epoch", Int32),
        ("is_renew_ack", Boolean),
        ("topics", _ACK_TOPICS),
        _TAGS,
    )


class ShareAcknowledgeRequest(Request[ShareAcknowledgeRequest_v2]):
    API_KEY = ACKNOWLEDGE

    def __init__(self, group: str, member: str, epoch: int, topic_id: uuid.UUID,
                 acks: list[tuple[int, int]], renew: bool = False) -> None:
        self._args = (group, member, epoch, renew,
                      [(topic_id, [(0, ack_batches(acks), {})], {})], {})

    def build(self, request_struct_class):
        return request_struct_class(*self._args)


def supported(versions: dict[int, tuple[int, int]]) -> bool:
    """Does a broker with these ApiVersions serve share groups as written here?"""
    want = {HEARTBEAT: 1, FETCH: 2, ACKNOWLEDGE: 2}
    return all(key in versions and versions[key][0] <= v <= versions[key][1]
               for key, v in want.items())


# -- IncrementalAlterConfigs v0, for a share group's start -------------------------------
# A new share group starts at the end of the log (share.auto.offset.reset=latest);
# a pipe's readers must get what was written before they came, as on every
# other path.  The setting is a group config (resource type 32), which only
# IncrementalAlterConfigs sets; aiokafka has AlterConfigs alone.
GROUP_RESOURCE = 32
SET = 0


class IncrementalAlterConfigsResponse_v0(Response):
    API_KEY = 44
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("responses", Array(("error_code", Int16), ("error_message", String("utf-8")),
                            ("resource_type", Int8), ("resource_name", String("utf-8")))),
    )


class IncrementalAlterConfigsRequest_v0(RequestStruct):
    API_KEY = 44
    API_VERSION = 0
    RESPONSE_TYPE = IncrementalAlterConfigsResponse_v0
    SCHEMA = Schema(
        ("resources", Array(("resource_type", Int8), ("resource_name", String("utf-8")),
                            ("configs", Array(("name", String("utf-8")),
                                              ("config_operation", Int8),
                                              ("value", String("utf-8")))))),
        ("validate_only", Boolean),
    )


class SetGroupConfig(Request[IncrementalAlterConfigsRequest_v0]):
    API_KEY = 44

    def __init__(self, group: str, configs: dict[str, str]) -> None:
        self._args = ([(GROUP_RESOURCE, group, [(k, SET, v) for k, v in configs.items()])], False)

    def build(self, request_struct_class):
        return request_struct_class(*self._args)

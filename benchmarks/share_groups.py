"""ShareGroupDescribe (77) v1, field for field as Kafka 4.4's
clients/src/main/resources/common/message/ShareGroupDescribe{Request,Response}.json:
the bench waits for a pipe's share group member to be assigned its
partition (a share group is never "Stable" to DescribeGroups), as it waits
for a consumer group to be Stable.  aiokafka has no share-group admin calls.
"""

from __future__ import annotations

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean, CompactArray, CompactString, Int16, Int32, Schema, TaggedFields,
)

from dnpfs.backends.kafka._aiokafka.share_requests import Uuid

_STR = CompactString("utf-8")
_TAGS = ("tags", TaggedFields)


class ShareGroupDescribeResponse_v1(Response):
    API_KEY = 77
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("groups", CompactArray(
            ("error_code", Int16),
            ("error_message", _STR),
            ("group_id", _STR),
            ("group_state", _STR),
            ("group_epoch", Int32),
            ("assignment_epoch", Int32),
            ("assignor_name", _STR),
            ("members", CompactArray(
                ("member_id", _STR),
                ("rack_id", _STR),
                ("member_epoch", Int32),
                ("client_id", _STR),
                ("client_host", _STR),
                ("subscribed_topic_names", CompactArray(_STR)),
                ("assignment", Schema(
                    ("topic_partitions", CompactArray(
                        ("topic_id", Uuid), ("topic_name", _STR),
                        ("partitions", CompactArray(Int32)), _TAGS)),
                    _TAGS)),
                _TAGS)),
            ("authorized_operations", Int32),
            _TAGS)),
        _TAGS,
    )


class ShareGroupDescribeRequest_v1(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 77
    API_VERSION = 1
    RESPONSE_TYPE = ShareGroupDescribeResponse_v1
    SCHEMA = Schema(("group_ids", CompactArray(_STR)), ("include_authorized_operations", Boolean),
                    _TAGS)


class ShareGroupDescribe(Request[ShareGroupDescribeRequest_v1]):
    API_KEY = 77

    def __init__(self, group_ids: list[str]) -> None:
        self._args = (group_ids, False, {})

    def build(self, request_struct_class):
        return request_struct_class(*self._args)


def assigned(response) -> bool:
    """Has every group described a member that holds a partition?"""
    for code, message, gid, _state, *_, members, _ops, _tags in response.groups:
        if code:
            return False  # not there yet (GROUP_ID_NOT_FOUND until the first heartbeat)
        if not any(topic_partitions for *_, (topic_partitions, _), _ in members):
            return False
    return True

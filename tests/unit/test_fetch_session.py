"""The fetcher's incremental fetch session (KIP-227): what each request names
and how answers move the session on.  The real broker's side is exercised by
every Kafka read test and by test_backend_direct's lost-session test."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka.protocol.fetch import FetchRequest_v4, FetchRequest_v11

from dnpfs.backends.kafka._fetcher import (
    FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, KafkaFetchError, Session)


def sent(request, version=FetchRequest_v11):
    struct = request.build(version)
    topics = {t: parts[0][2] for t, parts in struct.topics}  # v11: (partition, epoch, offset, ...)
    return struct.session_id, struct.session_epoch, topics, struct.forgotten_topics_data


def answer(session_id, error=0):
    return SimpleNamespace(error_code=error, session_id=session_id, topics=[])


def test_first_request_is_full_and_opens_a_session():
    s = Session()
    assert sent(s.request({"a": 5, "b": 7})) == (0, 0, {"a": 5, "b": 7}, [])
    assert s.answered(answer(42), {"a": 5, "b": 7})
    assert (s.id, s.epoch) == (42, 1)


def test_incremental_requests_name_only_what_moved_added_or_left():
    s = Session()
    s.answered(answer(42), {"a": 5, "b": 7, "c": 1})
    # Nothing moved: an empty request that still waits for records of all three.
    assert sent(s.request({"a": 5, "b": 7, "c": 1})) == (42, 1, {}, [])
    s.answered(answer(42), {"a": 5, "b": 7, "c": 1})
    # a moved, c left (its buffer is full), d was added.
    assert sent(s.request({"a": 9, "b": 7, "d": 0})) == (42, 2, {"a": 9, "d": 0}, [("c", [0])])
    s.answered(answer(42), {"a": 9, "b": 7, "d": 0})
    assert sent(s.request({"a": 9, "b": 7, "d": 0, "c": 3})) == (42, 3, {"c": 3}, [])


@pytest.mark.parametrize("error", [FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH])
def test_a_session_the_broker_lost_is_opened_again_in_full(error):
    s = Session()
    s.answered(answer(42), {"a": 5})
    s.answered(answer(42), {"a": 6})
    assert not s.answered(answer(0, error), {"a": 6})
    # Epoch 0 with the old id: the broker closes it (if it still has it) and opens another.
    assert sent(s.request({"a": 6, "b": 1})) == (42, 0, {"a": 6, "b": 1}, [])


def test_a_failed_request_restarts_in_full():
    s = Session()
    s.answered(answer(42), {"a": 5})
    s.restart()  # what the loop does when a request fails (broker away, unreadable answer)
    assert sent(s.request({"a": 5})) == (42, 0, {"a": 5}, [])


def test_other_top_level_errors_are_raised():
    s = Session()
    with pytest.raises(KafkaFetchError):
        s.answered(answer(0, 3), {"a": 5})


def test_a_broker_without_room_is_asked_in_full_each_time():
    s = Session()
    assert s.answered(answer(0), {"a": 5})  # session id 0: none was opened
    assert sent(s.request({"a": 5})) == (0, 0, {"a": 5}, [])


def test_epoch_wraps_to_one():
    s = Session()
    s.answered(answer(42), {"a": 5})
    s.epoch = 0x7FFFFFFF
    s.answered(answer(42), {"a": 5})
    assert s.epoch == 1


def test_brokers_before_fetch_v7_get_plain_full_requests():
    s = Session()
    s.answered(SimpleNamespace(topics=[]), {"a": 5})  # a v4 answer has no session fields
    struct = s.request({"a": 5}).build(FetchRequest_v4)
    assert [(t, p[0][1]) for t, p in struct.topics] == [("a", 5)]
    assert "session_id" not in struct.__dict__
    struct.encode()


def test_the_closing_request_ends_the_session_and_waits_for_nothing():
    s = Session()
    s.answered(answer(42), {"a": 5})
    struct = s.request({"a": 5}).build(FetchRequest_v11)
    assert struct.max_wait_time > 0
    struct = s.closing().build(FetchRequest_v11)
    assert (struct.session_id, struct.session_epoch, struct.topics, struct.max_wait_time) == \
        (42, -1, [], 0)


def test_a_changed_size_is_sent_like_a_moved_position():
    # The broker keeps each partition's size with its position: when the
    # mount's fetch budget is shared among more members, the smaller size
    # must reach it although the position did not move.
    s = Session()
    s.request({"a": 5, "b": 7}, {"a": 1 << 20, "b": 1 << 20})
    assert s.answered(answer(42), {"a": 5, "b": 7}, {"a": 1 << 20, "b": 1 << 20})
    struct = s.request({"a": 5, "b": 7}, {"a": 1 << 20, "b": 64 << 10}, 2 << 20).build(
        FetchRequest_v11)
    assert [(t, parts[0][2], parts[0][4]) for t, parts in struct.topics] == [("b", 7, 64 << 10)]
    assert struct.max_bytes == 2 << 20

"""A Kafka reader group's member state as the trio thread sees it
(``_shared.MemberState``), and what a member drops when its share of the
mount's fetch budget shrinks (``GroupMember.shed``).  No broker: these are
the buffer's rules."""

from __future__ import annotations

from dnpfs.backends.kafka._member import GroupMember, MemberContext
from dnpfs.backends.kafka._shared import MemberState
from dnpfs.model import Cursor, Kind, StoredRecord

RECORD = 128 << 10


def state_with(*offsets: int) -> MemberState:
    state = MemberState(session_s=10.0)
    state.held = state.settled = True
    state.confirmed_at = float("inf")  # the group answered just now
    for offset in offsets:
        state.buffer.append(StoredRecord(offset, Kind.DATA, None, bytes(RECORD)))
        state.buffered += RECORD
    return state


def read_all(fetched):
    """A decide() that takes every record handed over."""
    if not fetched.records:
        return fetched.cursor, b""
    return Cursor(fetched.records[-1].offset + 1), b"".join(r.data for r in fetched.records)


def test_a_buffered_read_moves_the_cursor_drops_what_it_read_and_tells_the_loop_once():
    state = state_with(0, 1)
    (data,), tell = state.try_consume(1 << 20, read_all, blocking=False)
    assert len(data) == 2 * RECORD and state.cursor == Cursor(2)
    assert not state.buffer and state.buffered == 0
    assert tell  # no commit pending yet: the loop must learn that the cursor moved
    state.dirty = True  # the loop knows (GroupMember.moved)
    state.buffer.append(StoredRecord(2, Kind.DATA, None, b"x"))
    state.buffered += 1
    (_,), tell = state.try_consume(1 << 20, read_all, blocking=False)
    assert not tell  # the commit loop takes the newer cursor anyway


def test_a_blocking_read_of_an_empty_buffer_waits_in_trio_unless_the_member_stopped_fetching():
    state = state_with()
    assert state.try_consume(1 << 20, read_all, blocking=True) == ((b"",), False)
    state.paused = True  # it dropped everything (shed): only the loop fetches again
    assert state.try_consume(1 << 20, read_all, blocking=True) is None
    assert state.try_consume(1 << 20, read_all, blocking=False) is None


def member_with(*offsets: int) -> GroupMember:
    context = MemberContext(fetcher=None, consumer_kwargs=dict, pipe_exists=bool,
                            committed=None, end_offset=None, held_groups=int,
                            notify=print, drop=print)
    member = GroupMember(context, "p", "t.p", "")
    member.state = state_with(*offsets)
    return member


def test_a_smaller_share_drops_even_the_record_a_reader_is_in_and_stops_fetching():
    member = member_with(0, 1, 2)
    member.state.cursor = Cursor(0, 64 << 10)  # a reader took half of record 0, and idles
    assert member.shed(64 << 10, keep_first=False) == 0
    assert not member.state.buffer and member.state.buffered == 0
    assert member.state.paused and not member.wants_records()


def test_an_overfilled_fetch_keeps_its_first_record_so_that_a_reader_gets_on():
    member = member_with(5, 6, 7)
    assert member.shed(64 << 10) == 6
    assert [r.offset for r in member.state.buffer] == [5]
    assert not member.state.paused

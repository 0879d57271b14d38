"""The EOF and cursor rules of delivery.take, without a mount."""

from dnpfs.delivery import ReaderView, take, would_deliver
from dnpfs.model import Cursor, Kind, StoredRecord


def recs(*items):
    """("b", "s1") -> BEGIN, ("d", "s1", b"x") -> DATA, ("e", "s1") -> END; offsets 0.."""
    kinds = {"b": Kind.BEGIN, "d": Kind.DATA, "e": Kind.END}
    return [StoredRecord(i, kinds[it[0]], it[1], it[2] if len(it) > 2 else b"")
            for i, it in enumerate(items)]


def test_bytes_across_records_up_to_the_request():
    r = recs(("b", "s"), ("d", "s", b"abc"), ("d", "s", b"def"))
    t = take(Cursor(), r, 4)
    assert t.data == b"abcd" and not t.eof
    assert t.cursor == Cursor(2, 1, frozenset({"s"}))
    t2 = take(t.cursor, r, 100, view=t.view)
    assert t2.data == b"ef" and t2.cursor.offset == 3


def test_eof_after_the_last_session_and_bytes_first():
    r = recs(("b", "s"), ("d", "s", b"hi"), ("e", "s"))
    t = take(Cursor(), r, 100)
    assert t.data == b"hi" and not t.eof and t.cursor.offset == 2  # stops before END
    t2 = take(t.cursor, r, 100, view=t.view)
    assert t2.data == b"" and t2.eof and t2.cursor == Cursor(3, 0, frozenset())


def test_overlapping_sessions_one_eof():
    r = recs(("b", "a"), ("b", "b"), ("d", "a", b"x"), ("e", "a"), ("d", "b", b"y"), ("e", "b"))
    t = take(Cursor(), r, 100)
    assert t.data == b"xy" and not t.eof
    t2 = take(t.cursor, r, 100, view=t.view)
    assert t2.eof


def test_stale_end_of_a_session_this_reader_never_saw_is_skipped():
    # Session s's bytes went to an earlier reader; its END was written before we opened.
    r = [StoredRecord(5, Kind.END, "s"), StoredRecord(6, Kind.BEGIN, "t"),
         StoredRecord(7, Kind.DATA, "t", b"new")]
    t = take(Cursor(5, 0, frozenset({"s"})), r, 100, view=ReaderView(horizon=8))
    assert t.data == b"new" and not t.eof


def test_end_written_after_open_is_eof_even_if_unseen():
    r = [StoredRecord(5, Kind.END, "s")]
    t = take(Cursor(5, 0, frozenset({"s"})), r, 100, view=ReaderView(horizon=5))
    assert t.eof


def test_empty_session_is_eof_for_a_reader_that_saw_it_begin():
    t = take(Cursor(), recs(("b", "s"), ("e", "s")), 100)
    assert t.eof and t.data == b""


def test_packet_mode_one_record_per_read_rest_kept():
    r = recs(("d", None, b"0123456789"), ("d", None, b"next"))
    t = take(Cursor(), r, 4, packet=True)
    assert t.data == b"0123" and t.cursor == Cursor(0, 4)
    t = take(t.cursor, r, 100, packet=True)
    assert t.data == b"456789" and t.cursor.offset == 1
    t = take(t.cursor, r, 100, packet=True)
    assert t.data == b"next"


def test_plain_data_without_session_never_opens_or_closes():
    r = recs(("d", None, b"kcat"))
    t = take(Cursor(), r, 100)
    assert t.data == b"kcat" and t.cursor.open_sessions == frozenset()


def test_partial_record_returned_by_backend():
    # A backend may return only the bytes from the cursor's position on.
    r = [StoredRecord(3, Kind.DATA, "s", b"lo", start=3, size=5)]
    t = take(Cursor(3, 3, frozenset({"s"})), r, 100)
    assert t.data == b"lo" and t.cursor == Cursor(4, 0, frozenset({"s"}))


def test_gap_from_retention_resets_partial_position():
    r = [StoredRecord(9, Kind.DATA, "s", b"fresh")]
    t = take(Cursor(4, 2), r, 100)
    assert t.data == b"fresh" and t.cursor.offset == 10


def test_would_deliver():
    assert not would_deliver(Cursor(), recs(("b", "s")), ReaderView())
    assert would_deliver(Cursor(), recs(("b", "s"), ("d", "s", b"x")), ReaderView())
    assert would_deliver(Cursor(), recs(("b", "s"), ("e", "s")), ReaderView())


def test_end_of_a_session_the_group_never_saw_open_is_no_eof():
    # A duplicate END, or one whose BEGIN and data retention removed.
    r = [StoredRecord(5, Kind.END, "s")]
    t = take(Cursor(5, 0, frozenset()), r, 100, view=ReaderView(horizon=0))
    assert not t.eof and t.cursor.offset == 6


def test_unreadable_records_fail_one_read_after_the_bytes_before_them():
    """Bytes first; the next read consumes the unreadable batch (its last
    offset, 7: it held 5-7) and fails; the read after goes on behind it."""
    r = [StoredRecord(3, Kind.BEGIN, "s"), StoredRecord(4, Kind.DATA, "s", b"ab"),
         StoredRecord(7, Kind.UNREADABLE, None), StoredRecord(8, Kind.DATA, "s", b"cd"),
         StoredRecord(9, Kind.END, "s")]
    t = take(Cursor(3), r, 100)
    assert t.data == b"ab" and not t.unreadable and t.cursor.offset == 7
    assert would_deliver(t.cursor, r, t.view)
    t2 = take(t.cursor, r, 100, view=t.view)
    assert t2.unreadable and t2.size == 0 and not t2.eof and t2.answers
    assert t2.cursor == Cursor(8, 0, frozenset({"s"}))  # the session stays open
    t3 = take(t2.cursor, r, 100, view=t2.view)
    assert t3.data == b"cd" and not t3.unreadable
    assert take(t3.cursor, r, 100, view=t3.view).eof


def test_whole_takes_the_record_and_holds_its_rest():
    r = recs(("b", "s"), ("d", "s", b"abc"), ("d", "s", b"def"))
    t = take(Cursor(), r, 1, whole=True)
    assert t.data == b"a" and t.cursor == Cursor(2, 0, frozenset({"s"}))
    assert (t.held.offset, t.held.start, t.held.data, t.held.end) == (1, 1, b"bc", 3)
    t2 = take(t.cursor, r, 100, view=t.view, whole=True)  # the next reader: the next record
    assert t2.data == b"def" and t2.held is None


def test_whole_holds_nothing_of_a_record_not_fetched_whole():
    # A store may return part of a large record: then the cursor keeps the byte.
    big = [StoredRecord(0, Kind.DATA, "s", b"ab", 0, 10)]
    t = take(Cursor(), big, 1, whole=True)
    assert t.held is None and t.cursor.offset == 0 and t.cursor.byte_pos == 1

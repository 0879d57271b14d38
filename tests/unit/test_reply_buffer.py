"""ReplyBuffer: the bytes of a read reply made of several records."""

from __future__ import annotations

from dnpfs.fs import ReplyBuffer


def test_parts_are_joined_in_order_and_a_single_part_is_passed_as_is():
    buf = ReplyBuffer(16)
    one = b"only"
    assert buf.join((one,)) is one
    assert buf.join(()) == b""
    assert bytes(buf.join((b"ab", b"", b"cde", b"f"))) == b"abcdef"
    assert bytes(buf.join((b"xy", b"z"))) == b"xyz"  # reused: shorter, no stale tail


def test_a_reply_larger_than_the_buffer_is_joined_in_new_memory():
    buf = ReplyBuffer(4)
    assert buf.join((b"abc", b"def")) == b"abcdef"
    assert bytes(buf.join((b"ab", b"cd"))) == b"abcd"  # exactly full

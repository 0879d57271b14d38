"""The fetcher's frame reader (_aiokafka/frames.py): frames cut out of the
socket's bytes, and the socket told to wake the loop only once a large
frame's bytes are there (SO_RCVLOWAT).  A real socket, no broker."""

from __future__ import annotations

import socket

import pytest

from dnpfs.backends.kafka._aiokafka.frames import RCVLOWAT, SMALL_FRAMES, _Frames


class Conn:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def frame_received(self, frame) -> None:
        self.frames.append(bytes(frame))


def feed(frames: _Frames, data: bytes, step: int) -> None:
    """*data* as the socket would hand it over, at most *step* bytes a read."""
    at = 0
    while at < len(data):
        buf = frames.get_buffer(-1)
        n = min(step, len(buf), len(data) - at)
        buf[:n] = data[at:at + n]
        frames.buffer_updated(n)
        at += n


def lowat(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


@pytest.mark.skipif(not hasattr(socket, "SO_RCVLOWAT"), reason="no SO_RCVLOWAT here")
def test_a_large_frame_wakes_the_loop_once_its_bytes_are_there() -> None:
    a, b = socket.socketpair()
    try:
        conn = Conn()
        frames = _Frames(conn, None, a)
        size = RCVLOWAT + (1 << 20)
        body = bytes(range(256)) * (size // 256)
        small = b"x" * 100
        feed(frames, len(small).to_bytes(4, "big") + small, 1 << 16)
        assert lowat(a) == 1  # small frames: every byte wakes it, as before
        feed(frames, len(body).to_bytes(4, "big") + body[:1000], 1 << 16)
        assert lowat(a) == RCVLOWAT  # capped; the rest of the frame is more
        feed(frames, body[1000:size - 300_000], 1 << 18)
        assert lowat(a) == 300_000  # no more than the frame still lacks
        feed(frames, body[size - 300_000:], 1 << 18)
        assert lowat(a) == 1  # the frame is in: the next one's length may be short
        assert conn.frames == [small, body]
    finally:
        a.close()
        b.close()


def test_frames_are_cut_the_same_without_a_socket() -> None:
    conn = Conn()
    frames = _Frames(conn, None)
    large = b"L" * (SMALL_FRAMES * 3)
    data = b"".join(len(f).to_bytes(4, "big") + f for f in (b"a", large, b"bc", large))
    feed(frames, data, 7_777)
    assert conn.frames == [b"a", large, b"bc", large]

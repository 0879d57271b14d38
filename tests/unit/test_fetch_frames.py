"""The fetcher's frame reader (_aiokafka/frames.py): frames cut out of the
socket's bytes, the socket told to wake the loop only once a large
frame's bytes are there (SO_RCVLOWAT), and large frames read into pooled
buffers that are never taken again while anything views them.  A real
socket, no broker."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from dnpfs.backends.kafka._aiokafka.frames import (
    BLOCKING_POLL,
    BLOCKING_READ,
    RCVLOWAT,
    SMALL_FRAMES,
    FramePool,
    _Frames,
)


class Conn:
    def __init__(self, keep: bool = False) -> None:
        self.frames: list[bytes] = []
        self.kept: list[memoryview] = []  # frames handed over as viewed, as handed
        self.viewed: list[bool] = []
        self.keep = keep

    def frame_received(self, frame, viewed: bool = False) -> None:
        self.frames.append(bytes(frame))
        self.viewed.append(viewed)
        if self.keep and viewed:
            self.kept.append(memoryview(frame)[10:20])  # a record's value, say


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


def test_a_viewed_frame_is_never_overwritten_while_anything_views_it() -> None:
    """Records of a response are views of its buffer: a reader slow on one
    of them while later responses arrive must still read its own bytes."""
    conn = Conn(keep=True)
    frames = _Frames(conn, None, pool=FramePool(2))
    bodies = [bytes([i]) * (SMALL_FRAMES * 2) for i in range(6)]
    for body in bodies:
        feed(frames, len(body).to_bytes(4, "big") + body, 50_000)
    assert conn.frames == bodies
    # Two pooled buffers, each still viewed: the third frame on went to the
    # reused buffer, handed over as not viewed (its reader copies).
    assert conn.viewed == [True, True, False, False, False, False]
    assert [bytes(v) for v in conn.kept] == [bytes([0]) * 10, bytes([1]) * 10]
    conn.kept.pop(0)  # the reader is done with the first response's record
    conn.keep = False
    more = bytes([9]) * (SMALL_FRAMES * 2)
    feed(frames, len(more).to_bytes(4, "big") + more, 50_000)
    assert conn.viewed[-1]  # its buffer was free again, and taken
    assert bytes(conn.kept[0]) == bytes([1]) * 10  # the other one's untouched


def test_a_pooled_buffer_too_small_for_a_frame_makes_way() -> None:
    pool = FramePool(1)
    small = pool.take(100)
    assert small is not None and len(small) == 100
    view = memoryview(small)
    assert pool.take(50) is None  # the only buffer is viewed
    view.release()
    large = pool.take(1000)
    assert large is not None and len(large) >= 1000 and len(pool) == 1


class Transport:
    """What _Frames asks of its transport while a thread reads the socket."""

    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def test_the_rest_of_a_large_frame_is_read_by_a_thread_with_the_loop_paused() -> None:
    """Past its first bytes, a large frame is read in one blocking recv off
    the loop (BLOCKING_READ); the loop's own reading is paused meanwhile and
    resumed after, and the socket is non-blocking again for it."""
    a, b = socket.socketpair()
    a.setblocking(False)

    async def go() -> None:
        conn, transport = Conn(), Transport()
        frames = _Frames(conn, Previous(), a, None, transport)
        body = bytes(range(256)) * ((BLOCKING_READ * 3) // 256)
        feed(frames, len(body).to_bytes(4, "big") + body[:1000], 1 << 16)
        assert not transport.reading and conn.frames == []

        def send_slowly() -> None:  # in pieces, as the broker's would come
            for at in range(1000, len(body), 1 << 18):
                b.sendall(body[at:at + (1 << 18)])
                time.sleep(0.005)

        await asyncio.get_running_loop().run_in_executor(None, send_slowly)
        for _ in range(200):
            if conn.frames:
                break
            await asyncio.sleep(0.01)
        assert conn.frames == [body] and transport.reading
        assert not os.get_blocking(a.fileno())
        # The next frame, a small one, comes the loop's way as before.
        feed(frames, (3).to_bytes(4, "big") + b"abc", 1 << 16)
        assert conn.frames == [body, b"abc"]
        frames.connection_lost(None)

    try:
        asyncio.run(go())
    finally:
        a.close()
        b.close()


def test_a_thread_reading_a_frame_stops_when_the_connection_is_lost() -> None:
    a, b = socket.socketpair()
    a.setblocking(False)

    async def go() -> None:
        conn = Conn()
        frames = _Frames(conn, Previous(), a, None, Transport())
        feed(frames, (BLOCKING_READ * 2).to_bytes(4, "big") + b"x" * 100, 1 << 16)
        reading = frames._reading
        frames.connection_lost(None)  # the broker gone, or the fetcher closed
        await asyncio.wait_for(reading, 2 * BLOCKING_POLL + 1)
        assert conn.frames == []

    try:
        asyncio.run(go())
    finally:
        a.close()
        b.close()


class Previous:
    def connection_lost(self, exc) -> None:
        pass

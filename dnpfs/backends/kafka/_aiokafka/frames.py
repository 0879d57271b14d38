"""The fetcher's connections: aiokafka's, reading frames into buffers of their own.

An aiokafka connection reads the socket through an asyncio StreamReader: each
chunk is appended to a bytearray, and a frame is sliced out of it and copied
into bytes, then copied again when it is decoded.  For a 4 MiB fetch response
that is four copies of every byte, each into memory freshly allocated (page
faults, zeroing), and it was half the daemon's CPU reading a backlog
(docs/decisions.md, "fetch responses read in place").

``FetchConnection`` is an aiokafka connection in every other respect
(connecting, TLS, SASL, versions, timeouts, closing) but swaps the transport's
protocol for ``_Frames``, an asyncio BufferedProtocol that has the socket (or
TLS) read straight into the buffer of the frame being read.  A request may
carry ``decode_frame``: its response is handed to it as a memoryview of that
buffer (``_records.decode_fetch_v11``).  By default it is valid until the
next request is sent: the buffer is reused, so the decoder and its caller
copy what they keep.  A connection given a ``FramePool`` reads large frames
into the pool's buffers instead, and tells the decoder when its frame
may be viewed for as long as anything needs it (``viewed``): a buffer is
taken again only once nothing views it, which Python itself tracks (a
bytearray with live memoryviews refuses to be resized).  The fetcher's
records are then views of the response, not copies (docs/decisions.md,
"Kafka: records viewed in the fetch response").
Other responses go to aiokafka as before.
Past its first bytes, the rest of a frame of a MiB or more is read by a
thread in one blocking recv (MSG_WAITALL) while the loop's reading of the
socket is paused: the GIL is let go until the frame's last byte, where the
loop woke for every MiB of it and waited each time for the trio thread to
let go of the GIL (docs/decisions.md, "Kafka: fetch responses read off the
GIL").

This leans on aiokafka's connection internals (``_create_reader_task``,
``_handle_frame``, ``_requests``, ``_writer``), checked by the Kafka tests on
every backend run; a change there fails them rather than reading wrong data.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

from aiokafka import errors as kafka_errors
from aiokafka.conn import AIOKafkaConnection, CloseReason

# Frames up to this size (every response but a fetch's) are read into one
# reusable buffer, several per read; a larger one gets a buffer of its own.
SMALL_FRAMES = 64 << 10
# While a large frame is read, the socket wakes the loop only once this much
# of it (or all that is left) has arrived (SO_RCVLOWAT): a frame is of no use
# before its last byte, and each wake-up in between was a pass through the
# asyncio loop and a GIL hand-over for a recv of ~180 KiB (docs/decisions.md,
# "fetch responses read in fewer wake-ups").  Linux still wakes it early when
# the receive window fills, so a mark above what the socket can hold is safe.
RCVLOWAT = 1 << 20
# The rest of a frame at least this large is read by a thread of the
# connection's in one blocking recv (MSG_WAITALL), the GIL let go until its
# last byte: the trio thread replying to FUSE holds the GIL in turns, and
# each of the ~17 wake-ups of a 16 MiB response waited for it.
BLOCKING_READ = 1 << 20
# How long that recv blocks before it looks whether the connection closed.
BLOCKING_POLL = 1.0


class FetchConnection(AIOKafkaConnection):
    def __init__(self, *args, pool: FramePool | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Buffers for large frames that may stay viewed after their request.
        self._pool = pool

    def _create_reader_task(self):
        # aiokafka's reader task keeps waiting on its StreamReader, which now
        # only ever sees the end of the connection: it then closes the
        # connection and fails what waits, as it always did.
        task = super()._create_reader_task()
        transport = self._writer.transport
        # Plain TCP only: under TLS the socket holds ciphertext, and the
        # frame's bytes arrive through the TLS layer's buffers.
        plain = transport.get_extra_info("sslcontext") is None and hasattr(socket, "SO_RCVLOWAT")
        sock = transport.get_extra_info("socket") if plain else None
        transport.set_protocol(_Frames(self, transport.get_protocol(), sock, self._pool,
                                       transport if plain else None))
        return task

    def send(self, request, expect_response=True):
        # One request at a time: a response is read (and copied from) before
        # the next is asked for, so the next may reuse its buffer.  Requests
        # nobody waits for any more (a fetch cancelled by close) do not count.
        if any(not fut.done() for _, _, fut in self._requests):
            raise RuntimeError("a FetchConnection takes one request at a time")
        return super().send(request, expect_response)

    def frame_received(self, frame: bytes | memoryview, viewed: bool = False) -> None:
        """*viewed*: the frame's memory is not reused while anything views
        it (a pooled buffer, or bytes of its own)."""
        if not self._requests:
            self.close(reason=CloseReason.OUT_OF_SYNC,
                       exc=kafka_errors.CorrelationIdError("a response nobody asked for"))
            return
        correlation_id, request, fut = self._requests[0]
        decode = getattr(request, "decode_frame", None)
        if correlation_id is None or decode is None:
            self._handle_frame(bytes(frame))
            return
        self._requests.popleft()
        self._last_action = time.monotonic()
        got = int.from_bytes(frame[:4], "big", signed=True)
        if got != correlation_id:
            error = kafka_errors.CorrelationIdError(
                f"Correlation ids do not match: sent {correlation_id}, recv {got}")
            if not fut.done():
                fut.set_exception(error)
            self.close(reason=CloseReason.OUT_OF_SYNC, exc=error)
            return
        if fut.done():
            return  # timed out meanwhile
        try:
            if self._pool is not None:  # records may view it: read-only to them
                fut.set_result(decode(memoryview(frame).toreadonly()[4:], viewed))
            else:
                fut.set_result(decode(memoryview(frame)[4:]))
        except Exception as e:  # noqa: BLE001 - a response that cannot be read fails its request
            fut.set_exception(e)


class _Frames(asyncio.BufferedProtocol):
    """Kafka's size-prefixed frames: small ones several to a read in one
    buffer, a large one straight into a buffer of its size (reused).

    With a *pool*, a large frame is read into one of its buffers that
    nothing views any more and handed over as ``viewed``; when the pool has
    none, into the one reused buffer as before (not ``viewed``: its reader
    copies what it keeps)."""

    def __init__(self, conn: FetchConnection, previous: asyncio.BaseProtocol,
                 sock=None, pool: FramePool | None = None, transport=None) -> None:
        self._conn = conn
        self._sock = sock  # to set SO_RCVLOWAT on (None: not done)
        # Its socket's transport, to pause while a thread reads the socket
        # (None: large frames are read by the loop, as they arrive).
        self._transport = transport
        self._lowat = 1  # the socket's SO_RCVLOWAT now (Linux's default)
        self._previous = previous  # aiokafka's: flow control, the end of the connection
        self._small = bytearray(SMALL_FRAMES)
        self._small_used = 0
        self._large: memoryview | None = None  # the frame being read
        self._large_used = 0
        self._large_viewed = False  # ... into a pooled buffer
        self._pool = pool
        # Reused from one large frame to the next: a fresh multi-MiB buffer
        # costs a page fault and zeroing per 4 KiB before a byte is read.
        self._spare = bytearray()
        self._blocked: socket.socket | None = None  # the socket a thread reads now
        self._reading: asyncio.Future | None = None  # ... and what it answers
        self._lost = False

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._large is not None:
            return self._large[self._large_used:]
        return memoryview(self._small)[self._small_used:]

    def buffer_updated(self, nbytes: int) -> None:
        if self._large is not None:
            self._large_used += nbytes
            if self._large_used == len(self._large):
                frame, self._large = self._large, None
                self._wake_at(1)
                self._conn.frame_received(frame, self._large_viewed)
            else:
                self._wake_at(len(self._large) - self._large_used)
            return
        self._small_used += nbytes
        small, used, at = self._small, self._small_used, 0
        while used - at >= 4:
            size = int.from_bytes(small[at:at + 4], "big", signed=True)
            if size < 0:
                self._conn.close(reason=CloseReason.OUT_OF_SYNC,
                                 exc=kafka_errors.KafkaConnectionError("a frame of negative size"))
                self._small_used = 0
                return
            begin = at + 4
            if used - begin >= size:
                at = begin + size
                self._conn.frame_received(bytes(small[begin:at]), True)
            elif 4 + size > len(small):
                self._large, self._large_viewed = self._buffer(size)
                self._large[:used - begin] = small[begin:used]
                self._large_used = used - begin
                at = used
                if not self._read_rest():
                    self._wake_at(size - self._large_used)
                break
            else:
                break  # the rest of a small frame is still to come
        if at:
            small[:used - at] = small[at:used]
        self._small_used = used - at

    def _buffer(self, size: int) -> tuple[memoryview, bool]:
        """Where a large frame of *size* bytes is read, and whether it may
        stay viewed (a pooled buffer nothing views now)."""
        buf = self._pool.take(size) if self._pool is not None else None
        if buf is not None:
            return memoryview(buf)[:size], True
        if len(self._spare) < size:
            self._spare = bytearray(size)
        return memoryview(self._spare)[:size], False

    def _wake_at(self, left: int) -> None:
        """Have the socket wake the loop once *left* bytes (at most
        RCVLOWAT) are there to read, or at once for 1."""
        mark = max(1, min(left, RCVLOWAT))
        if self._sock is None or mark == self._lowat:
            return
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
        except OSError:
            self._sock = None  # not on this system: wake at every byte as before
            return
        self._lowat = mark

    def _read_rest(self) -> bool:
        """Have a thread read the rest of the large frame in one blocking
        recv; False if it is left to the loop (TLS, small, or no socket)."""
        left = len(self._large) - self._large_used
        if self._transport is None or self._sock is None or left < BLOCKING_READ:
            return False
        # A socket of its own on the same connection: the transport's stays
        # non-blocking to Python; the thread's blocks (O_NONBLOCK is the
        # connection's).  The transport does not read meanwhile (paused), and
        # writes only a request sent after a cancelled one (a share reader's
        # last acknowledgements at close): a blocking send, at once unless
        # the socket's send buffer is full.
        try:
            sock = self._sock.dup()
        except OSError:  # out of file descriptors: the loop reads it, as before
            return False
        loop = asyncio.get_running_loop()
        reading = loop.create_future()
        view = self._large[self._large_used:]

        def read() -> None:
            try:
                got = _recv_all(sock, view)
            except BaseException as e:  # noqa: BLE001 - handed to the loop, which closes the connection
                got = e
            try:
                loop.call_soon_threadsafe(self._rest_read, reading, got)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for the frame

        # A daemon thread per frame (~60 a second at most): a thread pool's
        # are joined at exit, and one stuck in a recv would keep the daemon.
        thread = threading.Thread(target=read, name="dnpfs-fetch-read", daemon=True)
        self._transport.pause_reading()
        self._blocked, self._reading = sock, reading
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the loop reads it, as before
            self._blocked = self._reading = None
            sock.close()
            self._transport.resume_reading()
            return False
        return True

    def _rest_read(self, reading: asyncio.Future, got: int | BaseException) -> None:
        sock, self._blocked = self._blocked, None
        sock.close()
        reading.set_result(None)
        if self._lost or self._large is None:
            return
        if isinstance(got, BaseException) or self._large_used + got < len(self._large):
            why = got if isinstance(got, BaseException) else "the broker closed the connection"
            self._conn.close(reason=CloseReason.CONNECTION_BROKEN,
                             exc=kafka_errors.KafkaConnectionError(f"reading a response: {why}"))
            return
        self._transport.resume_reading()
        frame, self._large = self._large, None
        self._wake_at(1)
        self._conn.frame_received(frame, self._large_viewed)

    def eof_received(self):
        return self._previous.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._blocked is not None:
            try:  # wakes the thread's recv (the socket, not only this fd)
                self._blocked.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._previous.connection_lost(exc)

    def pause_writing(self) -> None:
        self._previous.pause_writing()

    def resume_writing(self) -> None:
        self._previous.resume_writing()


def _recv_all(sock: socket.socket, view: memoryview) -> int:
    """Read into all of *view* from *sock* (a thread's): the bytes read,
    fewer only if the connection ended.  The GIL is let go for each recv."""
    sock.settimeout(None)  # blocking: the connection's O_NONBLOCK off...
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    _timeval(BLOCKING_POLL))
    got = 0
    try:
        while got < len(view):
            try:
                n = sock.recv_into(view[got:], 0, socket.MSG_WAITALL)
            except (BlockingIOError, InterruptedError):
                continue  # SO_RCVTIMEO with nothing read: wait on
            if n == 0:
                break  # closed (or shut down by connection_lost)
            got += n
    finally:
        sock.setblocking(False)  # ... and on again before the loop reads it
    return got


def _timeval(seconds: float) -> bytes:
    return struct.pack("ll", int(seconds), int(seconds % 1 * 1e6))


class FramePool:
    """Buffers for large frames whose records stay views of them, shared by
    a fetcher's connections (one thread: its loop): at most *limit*, each
    taken again once nothing views it.  A reader slow on one record keeps
    its response's whole buffer, so the pool is bounded, not the records:
    when every buffer is viewed, frames are read as before and copied from.
    Buffers are made at least *size* bytes: frames differ in size, and one
    made again for every frame larger than the last cost a page fault and
    zeroing per 4 KiB (2 % of the reading daemon's samples)."""

    def __init__(self, limit: int, size: int = 0) -> None:
        self.limit = limit
        self.size = size
        self._bufs: list[bytearray] = []

    def take(self, size: int) -> bytearray | None:
        """A buffer of at least *size* bytes that nothing views, or None."""
        small = None
        for buf in self._bufs:
            if _unviewed(buf):
                if len(buf) >= size:
                    return buf
                small = buf
        if small is not None:  # free but too small: make way for a larger one
            self._bufs.remove(small)
        if len(self._bufs) >= self.limit:
            return None
        buf = bytearray(max(size, self.size))
        self._bufs.append(buf)
        return buf

    def __len__(self) -> int:
        return len(self._bufs)


def _unviewed(buf: bytearray) -> bool:
    """Does nothing view *buf*?  A bytearray with live memoryviews (exports)
    refuses to be resized: a byte appended and taken off again tells, and
    costs nothing after its first time (the bytearray keeps room to grow)."""
    try:
        buf.append(0)
    except BufferError:
        return False
    del buf[-1]
    return True

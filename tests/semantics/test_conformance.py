"""Side by side: each behaviour dnpfs shares with a local FIFO runs against a
real kernel FIFO and against dnpfs (writer on one mount, reader on the other),
and must give the same outcome.  docs/semantics.md lists these and the
deliberate differences.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
import subprocess
import threading
import time

import pytest


def open_pair(wpath, rpath, rflags=0, wflags=0):
    """Reader and writer fds.  A FIFO's opens block until the other end
    comes, so the reader opens in a thread."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", os.open(rpath, os.O_RDONLY | rflags)))
    t.start()
    time.sleep(0.05)
    w = os.open(wpath, os.O_WRONLY | wflags)
    t.join(5)
    return box["r"], w


def read_with_timeout(fd, size=65536, timeout=0.5):
    """('data', bytes) or ('blocked', None) if nothing came within *timeout*."""
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("v", os.read(fd, size)), daemon=True)
    t.start()
    t.join(timeout)
    return ("data", box["v"]) if "v" in box else ("blocked", None)


# Each scenario takes (writer path, reader path) and returns what a user sees.

def bytes_in_order_then_eof(wp, rp):
    r, w = open_pair(wp, rp)
    for chunk in (b"one ", b"two ", b"three"):
        os.write(w, chunk)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    return out


def read_returns_what_is_there(wp, rp):
    r, w = open_pair(wp, rp)
    os.write(w, b"hi")
    got = read_with_timeout(r, 65536, 5)
    os.close(w)
    os.read(r, 10)
    os.close(r)
    return got


def empty_writer_session_is_eof(wp, rp):
    r, w = open_pair(wp, rp)
    os.close(w)
    got = read_with_timeout(r, 100, 5)
    os.close(r)
    return got


def overlapping_writers_one_eof(wp, rp):
    r, w1 = open_pair(wp, rp)
    w2 = os.open(wp, os.O_WRONLY)
    seen = []
    os.write(w1, b"x")
    os.close(w1)
    seen.append(read_with_timeout(r, 100, 5))
    seen.append(read_with_timeout(r, 100, 0.5))  # w2 still open: no EOF yet
    os.write(w2, b"y")
    os.close(w2)
    time.sleep(0.3)
    # The pending read from above returns "y"; then EOF.
    seen.append(read_with_timeout(r, 100, 5))
    os.close(r)
    return seen


def pipe_buf_writes_not_interleaved(wp, rp):
    r, w0 = open_pair(wp, rp)
    out = bytearray()

    def drain():
        while chunk := os.read(r, 1 << 20):
            out.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    procs = [
        subprocess.Popen(["bash", "-c", f"exec > {wp}; for n in $(seq 40); do "
                          f"printf '%.0s{c}' $(seq 4096); done"])
        for c in "ABC"
    ]
    for p in procs:
        p.wait(60)
    os.close(w0)
    reader.join(30)
    os.close(r)
    blocks = [bytes(out[i : i + 4096]) for i in range(0, len(out), 4096)]
    return len(out), all(b == b[:1] * 4096 for b in blocks)


def nonblocking_read_with_writer_is_eagain(wp, rp):
    r, w = open_pair(wp, rp, rflags=os.O_NONBLOCK)
    try:
        os.read(r, 10)
        outcome = "data"
    except BlockingIOError as e:
        outcome = errno.errorcode[e.errno]
    os.write(w, b"z")
    time.sleep(0.2)
    got = os.read(r, 10)
    os.close(w)
    os.close(r)
    return outcome, got


def poll_is_truthful(wp, rp):
    r, w = open_pair(wp, rp, rflags=os.O_NONBLOCK)
    seen = [bool(select.select([r], [], [], 0.3)[0])]
    os.write(w, b"ready")
    seen.append(bool(select.select([r], [], [], 5)[0]))
    seen.append(os.read(r, 100))
    seen.append(bool(select.select([r], [], [], 0.3)[0]))
    os.close(w)
    seen.append(bool(select.select([r], [], [], 5)[0]))
    seen.append(os.read(r, 100))
    os.close(r)
    return seen


def packet_mode_one_write_per_read(wp, rp):
    """O_DIRECT: a FIFO takes it from fcntl on the write end (open refuses
    it); dnpfs takes it from open on the read end.  Each as its users do."""
    if stat.S_ISFIFO(os.stat(wp).st_mode):
        r, w = open_pair(wp, rp)
        fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_DIRECT)
    else:
        r, w = open_pair(wp, rp, rflags=os.O_DIRECT)
    for chunk in (b"ab", b"cde", b"f"):
        os.write(w, chunk)
    os.close(w)
    reads = []
    while chunk := os.read(r, 4096):
        reads.append(chunk)
    os.close(r)
    return reads


def each_byte_goes_to_one_reader(wp, rp):
    lines = [f"line-{i:03d}\n".encode() for i in range(200)]
    r1, w = open_pair(wp, rp, rflags=os.O_NONBLOCK)
    r2 = os.open(rp, os.O_RDONLY | os.O_NONBLOCK)
    for line in lines:
        os.write(w, line)
    got = {r1: b"", r2: b""}
    deadline = time.monotonic() + 10
    while sum(map(len, got.values())) < sum(map(len, lines)) and time.monotonic() < deadline:
        for fd in select.select([r1, r2], [], [], 0.2)[0]:
            try:
                got[fd] += os.read(fd, 64)
            except BlockingIOError:
                pass
    os.close(w)
    os.close(r1)
    os.close(r2)
    together = b"".join(got.values())
    # Each byte once, whichever reader: what a FIFO promises.  Which reader
    # gets which bytes it leaves open (a FIFO tears these lines between the
    # two, dnpfs keeps each write whole: tests/semantics/test_queue.py).
    return len(together), sorted(together) == sorted(b"".join(lines))


SCENARIOS = [
    bytes_in_order_then_eof,
    read_returns_what_is_there,
    empty_writer_session_is_eof,
    overlapping_writers_one_eof,
    pipe_buf_writes_not_interleaved,
    nonblocking_read_with_writer_is_eagain,
    poll_is_truthful,
    packet_mode_one_write_per_read,
    each_byte_goes_to_one_reader,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_same_outcome_as_a_local_fifo(scenario, mounts, tmp_path):
    fifo = tmp_path / "local.fifo"
    os.mkfifo(fifo)
    expected = scenario(str(fifo), str(fifo))

    a, b = mounts
    os.mkfifo(a / "p")
    got = scenario(str(a / "p"), str(b / "p"))
    assert got == expected

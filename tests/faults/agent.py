"""Workload processes for the fault tests: checksummed writers, recording readers.

    python -m tests.faults.agent writer PATH --id W [--fsync-every K | --session-every K]
                                        [--rate R] [--count N] [--pad B] --log FILE
    python -m tests.faults.agent reader PATH --log FILE [--packet] [--reopen] [--size B]

A writer runs until --count is reached, the --stop file exists, or SIGTERM/
SIGINT (handled between syscalls: a blocked syscall is retried, PEP 475).  A
reader runs until --stop exists or a signal ends it (default action).  They are
separate processes so that a test can kill -9 them, and so that a syscall
blocked in a stopped daemon never blocks the test itself.

Record (one write(), one line, far below PIPE_BUF so never interleaved):

    b"<wid> <seq> <t_ns> <pad> <crc32 of everything before it, 8 hex>\\n"

``t_ns`` is time.time_ns() just before the write(): readers measure latency
against it.  Every log line is written with one unbuffered os.write to an
O_APPEND file, so a process killed with kill -9 leaves a usable log:

writer log (JSON lines):
    {"ack": [first, last]}        records first..last were acknowledged by
                                  fsync() or close() returning 0
    {"written": seq}              the highest seq whose write() returned
    {"err": "EIO", "op": ..., "seq": ...}
    {"slow": op, "s": seconds}    a syscall that took more than a second
    {"stats": {op: max_seconds}}  at exit

reader log (framed, binary):
    b"D <t_ns> <n>\\n" + n bytes  one read() and what it returned
    b"E <t_ns>\\n"                 read() returned 0 (EOF)
    b"X <t_ns> <errno>\\n"         read() or open() failed
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import signal
import sys
import threading
import time
import zlib

_stop = False


def _on_signal(signum, frame):
    global _stop
    _stop = True


def record(wid: str, seq: int, pad: int = 0) -> bytes:
    body = f"{wid} {seq} {time.time_ns()} {'x' * pad}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n".encode()


def parse(line: bytes):
    """(wid, seq, t_ns) of a well-formed record line (without its newline), else None."""
    try:
        body, crc = line.decode("ascii").rsplit(" ", 1)
        if int(crc, 16) != zlib.crc32(body.encode()):
            return None
        wid, seq, t_ns, _pad = body.split(" ")
        return wid, int(seq), int(t_ns)
    except (UnicodeDecodeError, ValueError):
        return None


class Log:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def json(self, **event) -> None:
        os.write(self.fd, (json.dumps(event) + "\n").encode())

    def raw(self, data: bytes) -> None:
        os.write(self.fd, data)


def _stopped(args) -> bool:
    return _stop or (args.stop is not None and os.path.exists(args.stop))


class Timed:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.worst: dict[str, float] = {}

    def __call__(self, op: str, fn, *a):
        start = time.monotonic()
        try:
            return fn(*a)
        finally:
            took = time.monotonic() - start
            if took > self.worst.get(op, -1):
                self.worst[op] = took
            if took > 1.0:
                self.log.json(slow=op, s=round(took, 3), t=time.time())


def writer(args) -> int:
    log = Log(args.log)
    timed = Timed(log)
    flags = os.O_WRONLY | (os.O_SYNC if args.sync else 0)
    fd = None
    seq = 0
    first = 0  # first unacknowledged seq of the current session
    in_session = 0
    interval = 1.0 / args.rate if args.rate else 0.0
    next_at = time.monotonic()
    fsync_shift = 0

    def fail(op, e):
        nonlocal fd
        log.json(err=errno.errorcode.get(e.errno, str(e.errno)), op=op, seq=seq, t=time.time())
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
            fd = None
        time.sleep(0.2)

    def ack(last):
        nonlocal first
        if last >= first:
            log.json(ack=[first, last])
        first = last + 1

    while not _stopped(args) and (not args.count or seq < args.count):
        if fd is None:
            try:
                fd = timed("open", os.open, args.path, flags)
            except OSError as e:
                fail("open", e)
                continue
            first, in_session = seq, 0
        try:
            timed("write", os.write, fd, record(args.id, seq, args.pad))
        except OSError as e:
            seq += 1  # maybe stored, never acknowledged
            fail("write", e)
            continue
        log.json(written=seq, t=round(time.time(), 3))
        seq += 1
        in_session += 1
        if args.go is not None and seq == 1:
            while not os.path.exists(args.go) and not _stopped(args):
                time.sleep(0.05)  # the first record is out: wait for the rest of the start
            # Independent writers do not start in step: each takes its own
            # phase (seeded by its id) for its writes and its fsyncs.  Started
            # together they would write, and fsync, all at the same instants
            # for the whole run: a burst of 200 records every period.
            phase = random.Random(args.id)
            next_at = time.monotonic() + phase.uniform(0, interval)
            fsync_shift = phase.randrange(args.fsync_every) if args.fsync_every else 0
        if args.sync:
            ack(seq - 1)
        elif args.session_every and in_session >= args.session_every:
            closing, fd = fd, None
            try:
                timed("close", os.close, closing)  # the fd is gone even if this fails
            except OSError as e:
                fail("close", e)
                continue
            ack(seq - 1)
        elif args.fsync_every and (in_session + fsync_shift) % args.fsync_every == 0:
            try:
                timed("fsync", os.fsync, fd)
            except OSError as e:
                fail("fsync", e)
                continue
            ack(seq - 1)
        if interval:
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()
    while args.hold and not _stopped(args):
        time.sleep(0.05)  # --count reached: keep the session open until told to stop
    if fd is not None:
        try:
            timed("close", os.close, fd)
            ack(seq - 1)
        except OSError as e:
            log.json(err=errno.errorcode.get(e.errno, str(e.errno)), op="close", seq=seq,
                     t=time.time())
    log.json(stats={k: round(v, 4) for k, v in timed.worst.items()}, end=seq)
    return 0


def reader(args) -> int:
    log = Log(args.log)
    flags = os.O_RDONLY | (os.O_DIRECT if args.packet else 0)
    fd = None
    while not _stopped(args):
        if fd is None:
            try:
                fd = os.open(args.path, flags)
            except OSError as e:
                log.raw(b"X %d %d\n" % (time.time_ns(), e.errno))
                time.sleep(0.2)
                continue
            if args.ready:
                log.raw(b"R %d\n" % time.time_ns())
        try:
            data = os.read(fd, args.size)
        except OSError as e:
            log.raw(b"X %d %d\n" % (time.time_ns(), e.errno))
            _close(fd)
            fd = None
            time.sleep(0.1)
            continue
        now = time.time_ns()
        if data:
            log.raw(b"D %d %d\n" % (now, len(data)) + data)
            continue
        log.raw(b"E %d\n" % now)
        _close(fd)
        fd = None
        if not args.reopen:
            break
    if fd is not None:
        _close(fd)
    return 0


def _close(fd: int) -> None:
    try:
        os.close(fd)  # the fd is released even when this fails (a dead mount: ENOTCONN)
    except OSError:
        pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.faults.agent")
    sub = p.add_subparsers(dest="role", required=True)
    w = sub.add_parser("writer")
    w.add_argument("path", nargs="+", help="several: one thread each; {i} in --id and --log")
    w.add_argument("--id", required=True)
    w.add_argument("--log", required=True)
    w.add_argument("--count", type=int, default=0)
    w.add_argument("--rate", type=float, default=0.0, help="records per second (0: flat out)")
    w.add_argument("--fsync-every", type=int, default=0)
    w.add_argument("--session-every", type=int, default=0)
    w.add_argument("--sync", action="store_true", help="O_SYNC: every write is acknowledged")
    w.add_argument("--pad", type=int, default=0)
    w.add_argument("--hold", action="store_true",
                   help="after --count records, keep the file open until stopped")
    w.add_argument("--stop", default=None, help="stop when this file exists")
    w.add_argument("--go", default=None,
                   help="after the first record, wait until this file exists")
    r = sub.add_parser("reader")
    r.add_argument("path", nargs="+", help="several: one thread each; {i} in --log")
    r.add_argument("--log", required=True)
    r.add_argument("--packet", action="store_true", help="O_DIRECT: one record per read")
    r.add_argument("--reopen", action="store_true", help="after EOF, open again")
    r.add_argument("--ready", action="store_true", help="log R when the open returned")
    r.add_argument("--size", type=int, default=65536)
    r.add_argument("--stop", default=None)
    args = p.parse_args(argv)
    role = writer if args.role == "writer" else reader
    if args.role == "writer":
        # Stop between writes.  Readers keep the default: SIGTERM or SIGKILL
        # ends a blocked read at once (dnpfs answers EINTR), and the tests
        # stop readers only once nothing is in flight to them.
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    if len(args.path) == 1:
        args.path = args.path[0]
        return role(args)
    threads = []
    for i, path in enumerate(args.path):
        one = argparse.Namespace(**vars(args))
        one.path, one.log = path, args.log.format(i=i)
        if args.role == "writer":
            one.id = args.id.format(i=i)
        threads.append(threading.Thread(target=role, args=(one,), daemon=True))
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.1)  # the main thread stays free to run signal handlers
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hostile input: bad names, every unsupported call, odd write sizes, a
client hoarding 10,000 handles, and records from other Kafka clients with
missing, garbage or oversized content.  Each gets a defined errno or passes
as data, and the daemon stays alive and answering."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from ..util import wait_for
from .conftest import answers, kafka_args, long_or, make_plain_mount, mount_status, proc_status

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def errno_of(call) -> str:
    try:
        call()
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return "ok"


def test_invalid_names(tmp_path, reliability):
    reliability.row(
        fault="Invalid names: over-long (250, 256 (reaches the daemon), 5000 bytes), non-UTF-8, non-ASCII, blanks and"
              " control characters, '@' misuse, '__' prefix, '.'/'..' (sqlite)",
        expected="create: EINVAL (the kernel's ENAMETOOLONG above PATH_MAX; EEXIST/EISDIR"
                 " for '.'/'..'); lookup: ENOENT; nothing created; the daemon keeps answering")
    m = make_plain_mount(tmp_path, "a", ["--store", str(tmp_path / "s" / "s.sqlite")]).start()
    try:
        os.mkfifo(m / "p")
        names = {
            "250 x 'x'": b"x" * 250, "256 x 'x'": b"x" * 256,
            "5000 x 'x'": b"x" * 5000, "non-UTF-8": b"\xff\xfe",
            "non-ASCII": "é".encode(), "blank": b"a b", "newline": b"a\nb", "tab": b"a\tb",
            "star": b"a*b", "empty group": b"p@", "empty pipe": b"@g", "two @": b"p@g@h",
            "group of missing pipe": b"nope@g", "__ prefix": b"__x", "dot": b".",
            "dotdot": b"..",
        }
        root = os.fsencode(m.path)
        seen = {}
        for label, raw in names.items():
            path = root + b"/" + raw
            create = errno_of(lambda: os.mkfifo(path))
            create_o = errno_of(lambda: os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)))
            lookup = errno_of(lambda: os.stat(path))
            seen[label] = f"{create}/{create_o}/{lookup}"
        reliability.measure(**{"mkfifo/open(O_CREAT)/stat " + k: v for k, v in seen.items()})
        for label, got in seen.items():
            create, create_o, lookup = got.split("/")
            if label == "5000 x 'x'":  # above PATH_MAX: the kernel says so itself
                assert got == "ENAMETOOLONG/ENAMETOOLONG/ENAMETOOLONG", label
            elif label in ("dot", "dotdot"):
                assert create == "EEXIST" and create_o == "EISDIR" and lookup == "ok", label
            elif label == "group of missing pipe":
                assert create in ("EINVAL", "ENOENT") and lookup == "ENOENT", (label, got)
            else:
                assert create == "EINVAL" and create_o == "EINVAL" and lookup == "ENOENT", \
                    (label, got)
        assert sorted(os.listdir(m.path)) == ["p"]
        assert answers(m)
    finally:
        m.stop()


def _mmap_errno(fd: int) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    addr = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr not in (None, ctypes.c_void_p(-1).value):
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), "?")


def test_every_unsupported_call_gets_a_defined_errno(tmp_path, reliability):
    reliability.row(
        fault="Every unsupported call on a pipe and on the mount root (sqlite)",
        expected="the errno of docs/semantics.md for each (rename/link/symlink/setxattr ENOTSUP,"
                 " mkdir EPERM, rmdir ENOTDIR, O_RDWR EINVAL, lseek ESPIPE, mmap ENODEV,"
                 " chmod/chown/utime EPERM, truncate to >0 EINVAL, mknod of a device EPERM,"
                 " unknown xattr ENODATA); never EIO; the daemon keeps answering")
    m = make_plain_mount(tmp_path, "a", ["--store", str(tmp_path / "s" / "s.sqlite")]).start()
    try:
        os.mkfifo(m / "p")
        p = str(m / "p")
        rfd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(p, os.O_WRONLY)
        calls = {
            "rename": (lambda: os.rename(p, m / "q"), {"ENOTSUP", "EOPNOTSUPP"}),
            "rename over itself (RENAME_NOREPLACE-free)": (lambda: os.rename(p, p), {"ENOTSUP", "EOPNOTSUPP", "ok"}),
            "link": (lambda: os.link(p, m / "q"), {"ENOTSUP", "EOPNOTSUPP"}),
            "symlink": (lambda: os.symlink("p", m / "q"), {"ENOTSUP", "EOPNOTSUPP"}),
            "mkdir": (lambda: os.mkdir(m / "d"), {"EPERM"}),
            "rmdir pipe": (lambda: os.rmdir(p), {"ENOTDIR"}),
            "mknod char device": (lambda: os.mknod(m / "dev", 0o600 | 0o020000, os.makedev(1, 3)),
                                  {"EPERM"}),
            "mknod socket": (lambda: os.mknod(m / "sock", 0o600 | 0o140000), {"EPERM"}),
            "open O_RDWR": (lambda: os.close(os.open(p, os.O_RDWR)), {"EINVAL"}),
            "open O_DIRECTORY": (lambda: os.close(os.open(p, os.O_RDONLY | os.O_DIRECTORY)),
                                 {"ENOTDIR"}),
            "opendir of the root then open O_WRONLY": (
                lambda: os.close(os.open(m.path, os.O_WRONLY)), {"EISDIR"}),
            "lseek": (lambda: os.lseek(rfd, 10, os.SEEK_SET), {"ESPIPE"}),
            "pread": (lambda: os.pread(rfd, 10, 5), {"ESPIPE"}),
            "pwrite": (lambda: os.pwrite(wfd, b"x", 5), {"ESPIPE"}),
            "mmap": (lambda: _raise_if(_mmap_errno(rfd)), {"ENODEV"}),
            "fallocate": (lambda: os.posix_fallocate(wfd, 0, 4096), {"ENOTSUP", "EOPNOTSUPP", "ESPIPE", "ENODEV"}),
            # FIONREAD on a FUSE file is answered by the kernel itself.
            "ioctl FIONREAD": (lambda: fcntl.ioctl(rfd, 0x541B, b"\0" * 4),
                               {"ok", "ENOTTY", "ENOSYS", "EINVAL"}),
            "ioctl of an unknown request": (lambda: fcntl.ioctl(rfd, 0x7F42, b"\0" * 8),
                                            {"ENOTTY", "ENOSYS", "EINVAL"}),
            "chmod": (lambda: os.chmod(p, 0o600), {"EPERM"}),
            "chown": (lambda: os.chown(p, 1, 1), {"EPERM"}),
            "utime": (lambda: os.utime(p, (1, 1)), {"EPERM"}),
            "truncate 5": (lambda: os.truncate(p, 5), {"EINVAL"}),
            "chmod root": (lambda: os.chmod(m.path, 0o700), {"EPERM"}),
            "getxattr unknown": (lambda: os.getxattr(p, "user.nope"), {"ENODATA"}),
            "getxattr trusted.*": (lambda: os.getxattr(p, "trusted.x"), {"ENODATA"}),
            "setxattr": (lambda: os.setxattr(p, "user.x", b"1"), {"ENOTSUP", "EOPNOTSUPP"}),
            "setxattr status": (lambda: os.setxattr(m.path, "user.dnpfs.status", b"{}"),
                                {"ENOTSUP", "EOPNOTSUPP"}),
            "removexattr": (lambda: os.removexattr(p, "user.dnpfs.records"),
                            {"ENOTSUP", "EOPNOTSUPP"}),
            "read on a writing end": (lambda: os.read(wfd, 10), {"EBADF"}),
            "write on a reading end": (lambda: os.write(rfd, b"x"), {"EBADF"}),
            "listdir of a pipe": (lambda: os.listdir(p), {"ENOTDIR"}),
            "unlink of the root's parent entry": (lambda: os.unlink(m / ".."), {"EISDIR", "EPERM", "EBUSY", "ENOENT"}),
        }
        seen = {}
        for label, (call, ok) in calls.items():
            seen[label] = errno_of(call)
        flock = errno_of(lambda: fcntl.flock(rfd, fcntl.LOCK_EX | fcntl.LOCK_NB))
        os.close(rfd)
        os.close(wfd)
        reliability.measure(**seen, flock=flock)
        wrong = {k: (seen[k], sorted(ok)) for k, (_, ok) in calls.items() if seen[k] not in ok}
        assert "EIO" not in seen.values(), {k: v for k, v in seen.items() if v == "EIO"}
        assert not wrong, wrong
        assert answers(m)
    finally:
        m.stop()


def _raise_if(code: str) -> None:
    if code != "ok":
        raise OSError(getattr(errno, code), code)


def test_zero_byte_writes(make_mount_pair, reliability):
    a, b, backend = make_mount_pair
    reliability.row(
        fault=f"Zero-byte write() calls, alone and between data, read in packet mode ({backend})",
        expected="write() returns 0 and stores nothing: no empty packet (which would read as"
                 " EOF), data in order, then one EOF")
    os.mkfifo(a / "z")
    wait_for(lambda: os.path.exists(b / "z"), 5, what="pipe on b")
    rfd = os.open(b / "z", os.O_RDONLY | os.O_DIRECT)
    try:
        wfd = os.open(a / "z", os.O_WRONLY)
        returns = [os.write(wfd, b""), os.write(wfd, b"a"), os.write(wfd, b""),
                   os.write(wfd, b"b"), os.write(wfd, b"")]
        os.fsync(wfd)
        os.close(wfd)
        empty = os.open(a / "z", os.O_WRONLY)  # a session with only an empty write
        os.write(empty, b"")
        os.close(empty)
        reads = []
        for _ in range(4):
            reads.append(os.read(rfd, 100))
            if reads[-1] == b"":
                break
        reliability.measure(write_returns=returns, packet_reads=[r.decode() for r in reads])
        assert returns == [0, 1, 0, 1, 0]
        assert reads == [b"a", b"b", b""]
    finally:
        os.close(rfd)
    assert answers(a) and answers(b)


HUGE = {"sqlite": 256 << 20, "kafka": 256 << 20}


def test_one_huge_write(make_mount_pair, reliability):
    a, b, backend = make_mount_pair
    size = HUGE[backend]
    reliability.row(
        fault=f"One write() call of {size >> 20} MiB ({backend})",
        expected="the call writes every byte (a short count only with a signal); a reader on"
                 " another mount gets them unchanged; daemon memory stays bounded by the 16 MiB"
                 " buffer")
    os.mkfifo(a / "big")
    wait_for(lambda: os.path.exists(b / "big"), 5, what="pipe on b")
    reader = subprocess.Popen(f"cat {b / 'big'} | sha256sum", shell=True, stdout=subprocess.PIPE)
    data = os.urandom(1 << 20) * (size >> 20)
    before = proc_status(a.pid).get("VmHWM", 0)
    start = time.monotonic()
    fd = os.open(a / "big", os.O_WRONLY)
    n = os.write(fd, data)
    took = time.monotonic() - start
    total = n
    while total < len(data):  # a short write, then the rest
        total += os.write(fd, data[total:])
    os.close(fd)
    closed = time.monotonic() - start
    out, _ = reader.communicate(timeout=300)
    delivered = time.monotonic() - start
    after = proc_status(a.pid).get("VmHWM", 0)
    digest = hashlib.sha256(data).hexdigest()
    del data
    reliability.measure(first_write_returned=n, write_s=round(took, 1), close_s=round(closed, 1),
                        delivered_s=round(delivered, 1),
                        writer_daemon_peak_rss_growth_mib=round((after - before) / 1024, 1),
                        identical=out.split()[0].decode() == digest)
    assert out.split()[0].decode() == digest
    assert (after - before) / 1024 < 200, "the daemon held far more than its buffer"
    assert answers(a) and answers(b)


@pytest.fixture
def make_mount_pair(tmp_path, backend_args, backend):
    a = make_plain_mount(tmp_path, "a", backend_args).start()
    b = make_plain_mount(tmp_path, "b", backend_args).start()
    yield a, b, backend
    a.stop()
    b.stop()


HOARDER = textwrap.dedent("""
    import os, resource, sys
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    r, w, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fds = [os.open(r, os.O_RDONLY | os.O_NONBLOCK) for _ in range(n)]
    fds += [os.open(w, os.O_WRONLY) for _ in range(n)]
    print("ready", flush=True)
    sys.stdin.readline()
    os._exit(0)  # never closes: the kernel releases every handle
""")


def test_client_hoarding_handles_then_exiting(make_mount_pair, reliability):
    a, b, backend = make_mount_pair
    n = {"sqlite": 5000, "kafka": long_or(1000, 5000)}[backend]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 2 * n + 64:
        n = (hard - 64) // 2  # the hard limit of this environment (no CAP_SYS_RESOURCE)
    cycles = 2
    reliability.row(
        fault=f"A client opens {2 * n} handles ({n} reading, {n} writing) and exits without"
              f" closing them, {cycles} times ({backend})",
        expected="the daemon counts them (user.dnpfs.status) and releases every one when the"
                 " client exits: counts back to 0, its fds back to the baseline, RSS flat"
                 " between cycles; a blocked reader elsewhere gets EOF after the last of the"
                 " hoarded writer sessions ends")
    os.mkfifo(a / "hr")
    os.mkfifo(a / "hw")
    wait_for(lambda: os.path.exists(b / "hw"), 5, what="pipe on b")
    base = proc_status(a.pid)
    rows = []
    for _ in range(cycles):
        cat = subprocess.Popen(["cat", str(b / "hw")], stdout=subprocess.PIPE)
        client = subprocess.Popen([sys.executable, "-c", HOARDER, str(a / "hr"),
                                   str(a / "hw"), str(n)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        start = time.monotonic()
        assert client.stdout.readline().strip() == "ready"
        opened = time.monotonic() - start
        held = mount_status(a)
        full = proc_status(a.pid)
        client.stdin.write("\n")
        client.stdin.flush()
        client.wait(60)
        gone = time.monotonic()
        wait_for(lambda: (lambda s: s["readers_here"] == 0 and s["writers_here"] == 0)(
            mount_status(a)), 120, interval=0.5, what="every hoarded handle released")
        released = time.monotonic() - gone
        try:
            out, _ = cat.communicate(timeout=30)
            eof = round(time.monotonic() - gone, 1)
        except subprocess.TimeoutExpired:
            cat.kill()
            cat.communicate()
            eof = None
        time.sleep(1)
        after = proc_status(a.pid)
        rows.append(dict(open_s=round(opened, 1), held=f"{held['readers_here']}r/{held['writers_here']}w",
                         released_s=round(released, 1), reader_eof_s=eof,
                         rss_mib=round(after["VmRSS"] / 1024, 1),
                         peak_rss_mib=round(full["VmHWM"] / 1024, 1), fds=after["fds"]))
    reliability.measure(handles=2 * n, baseline_fds=base["fds"],
                        baseline_rss_mib=round(base["VmRSS"] / 1024, 1), cycles=rows)
    for row in rows:
        assert row["held"] == f"{n}r/{n}w"
        assert row["reader_eof_s"] is not None, "the blocked reader never got EOF"
        assert row["fds"] <= base["fds"] + 2, "the daemon kept file descriptors"
    assert rows[-1]["rss_mib"] - rows[0]["rss_mib"] < 20, "RSS grows with every cycle"
    assert answers(a) and answers(b)


def _kcat(broker, *args, input=None, files=()):
    r = subprocess.run([KCAT, "-b", broker, *args, *map(str, files)], input=input,
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")


@pytest.mark.kafka
@pytest.mark.skipif(KCAT is None, reason="kcat is not installed")
def test_foreign_kafka_records(fault_broker, tmp_path, reliability):
    reliability.row(
        fault="Records from kcat with no dnpfs headers, garbage or binary dnpfs.kind/session,"
              " duplicated headers, a key, a NULL value, an END of an unknown session, a 900 KB"
              " value (kafka)",
        expected="each passes as data of no session (a marker's value is ignored, a NULL value"
                 " is 0 bytes) or, for valid markers, opens/ends a session; the bytes arrive"
                 " exactly; the daemon keeps answering")
    args = kafka_args(fault_broker.bootstrap)
    prefix = args[-1]
    a = make_plain_mount(tmp_path, "a", args).start()
    try:
        os.mkfifo(a / "k")
        topic = prefix + "k"
        broker = fault_broker.bootstrap
        big = tmp_path / "big"
        big.write_bytes(os.urandom(900_000))
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        expected = b""
        cases = [
            ([], b"plain\n", b"plain"),
            (["-H", "dnpfs.kind=bogus"], b"bogus-kind\n", b"bogus-kind"),
            (["-H", b"dnpfs.kind=\xff\xfe"], b"binary-kind\n", b"binary-kind"),
            (["-H", "dnpfs.kind="], b"empty-kind\n", b"empty-kind"),
            (["-H", "dnpfs.kind=data", "-H", b"dnpfs.session=\xff\xfe"], b"bin-session\n",
             b"bin-session"),
            (["-H", "dnpfs.kind=data"], b"no-session\n", b"no-session"),
            (["-H", "dnpfs.kind=end", "-H", "dnpfs.session=ghost"], b"ignored-end\n", b""),
            (["-H", "dnpfs.kind=begin", "-H", "dnpfs.session=kc"], b"ignored-begin\n", b""),
            (["-H", "dnpfs.kind=data", "-H", "dnpfs.session=kc", "-H", "dnpfs.kind=end"],
             b"dup-headers\n", b"dup-headers"),
            (["-K", ":"], b"key:keyed\n", b"keyed"),
            (["-H", "dnpfs.session=kc"], b"session-no-kind\n", b"session-no-kind"),
        ]
        for hdrs, value, out in cases:
            _kcat(broker, "-P", "-t", topic, *hdrs, input=value)
            expected += out
        _kcat(broker, "-P", "-t", topic, files=[big])
        expected += big.read_bytes()
        _kcat(broker, "-P", "-t", topic, "-Z", files=[empty])
        _kcat(broker, "-P", "-t", topic, "-H", "dnpfs.kind=end", "-H", "dnpfs.session=kc",
              input=b".\n")
        _kcat(broker, "-P", "-t", topic, input=b"after\n")
        expected += b"after"
        got, eofs = b"", []
        deadline = time.monotonic() + 30
        fd = os.open(a / "k", os.O_RDONLY)
        try:
            while len(got) < len(expected) and time.monotonic() < deadline:
                chunk = os.read(fd, 1 << 20)
                if not chunk:  # EOF sticks to the handle: open again for what follows
                    eofs.append(len(got))
                    os.close(fd)
                    fd = os.open(a / "k", os.O_RDONLY)
                    continue
                got += chunk
        finally:
            os.close(fd)
        # Session kc (begin .. end) is the only one: its END is one EOF, before "after".
        eof = eofs == [len(expected) - len(b"after")]
        reliability.measure(records=len(cases) + 4, expected_bytes=len(expected),
                            got_bytes=len(got), identical=got == expected,
                            eof_at_bytes=eofs, one_eof_at_kcs_end=eof)
        assert got == expected, f"first difference at byte {next((i for i, (x, y) in enumerate(zip(got, expected)) if x != y), min(len(got), len(expected)))}"
        assert eof, eofs
        assert answers(a)
        status = mount_status(a)
        assert status["health"] == "ok"
    finally:
        a.stop()

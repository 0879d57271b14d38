"""A reader blocked in dnpfs can always be stopped, and blocked readers never
freeze the rest of the mount."""

from __future__ import annotations

import os
import select
import signal
import statistics
import subprocess
import time

import pytest

from ..mount import DNPFS, Mount
from ..util import STRACE, peek_until, proc_state, run, spawn, wait_blocked, wait_for


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_blocked_reader_dies_within_a_second(mount, sig):
    os.mkfifo(mount / "p")
    cat = spawn(["cat", str(mount / "p")])
    wait_blocked(cat)
    start = time.monotonic()
    cat.send_signal(sig)
    cat.wait(5)
    assert time.monotonic() - start < 1.0
    assert cat.returncode == -sig


def test_ctrl_c_in_a_shell_pipeline(mount):
    """A shell loop reading a pipe ends on Ctrl-C (SIGINT to the process group)."""
    os.mkfifo(mount / "p")
    loop = spawn(f"while read line; do echo got $line; done < {mount/'p'}", shell=True,
                 start_new_session=True)
    wait_blocked(loop)
    start = time.monotonic()
    os.killpg(loop.pid, signal.SIGINT)
    loop.wait(5)
    assert time.monotonic() - start < 1.0


def test_python_reader_with_a_handler_sees_eintr_and_can_retry(mount):
    """A signal with a handler interrupts the read; Python retries it (PEP 475)
    after running the handler, so the program keeps reading."""
    os.mkfifo(mount / "p")
    prog = ("import os, signal, sys\n"
            "signal.signal(signal.SIGUSR1, lambda *a: print('usr1', flush=True))\n"
            "print('ready', flush=True)\n"
            f"fd = os.open({str(mount / 'p')!r}, os.O_RDONLY)\n"
            "print(os.read(fd, 100).decode(), flush=True)\n")
    py = spawn(["python3", "-c", prog])
    # A starting interpreter also sleeps (loading modules): wait for its handler.
    assert py.stdout.readline() == b"ready\n"
    wait_blocked(py)
    py.send_signal(signal.SIGUSR1)
    time.sleep(1)
    assert py.poll() is None, "the read should be retried, not fail"
    run(f"printf data > {mount/'p'}", shell=True)
    out, err = py.communicate(timeout=5)
    assert out.decode().split() == ["usr1", "data"], err


def test_thousand_blocked_readers_do_not_freeze_the_mount(mount):
    n_pipes, per_pipe = 10, 100
    for i in range(n_pipes):
        os.mkfifo(mount / f"busy{i}")
    os.mkfifo(mount / "other")
    readers = []
    try:
        for i in range(n_pipes):
            for _ in range(per_pipe):
                readers.append(subprocess.Popen(["cat", str(mount / f"busy{i}")],
                                                stdout=subprocess.DEVNULL))
        wait_for(lambda: sum(proc_state(r.pid) in ("S", "D") for r in readers) == len(readers),
                 60, interval=0.2, what="1,000 blocked readers")
        time.sleep(1)
        assert all(r.poll() is None for r in readers)
        took = []
        for _ in range(7):
            start = time.monotonic()
            names = os.listdir(mount.path)
            with open(mount / "other", "wb", buffering=0) as w:
                w.write(b"still answering")
            took.append(time.monotonic() - start)
            assert len(names) == n_pipes + 1
        # The median, so one scheduling hiccup of a busy 2-core machine does not decide.
        assert statistics.median(took) < 0.1, (
            f"ls + write took {[round(t * 1000) for t in took]} ms with 1,000 blocked readers")
        # And every one of them can still be killed.
        start = time.monotonic()
        for r in readers:
            r.kill()
        for r in readers:
            r.wait(10)
        assert time.monotonic() - start < 5
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
                r.wait()


def test_readers_past_the_default_open_file_limit_can_still_be_interrupted(tmp_path):
    """A blocked reader must not cost the daemon an open file (it once
    watched each through /proc).  Started with a soft limit of 128 open
    files (1,024 is a common default, the test makes it small), it must
    still end the read of the 300th blocked reader on a signal."""
    m = Mount.under(tmp_path, "low", ["--store", str(tmp_path / "store.sqlite")],
                    wrap=lambda argv: ["prlimit", "--nofile=128:20000", "--", *argv]).start()
    readers = []
    try:
        os.mkfifo(m / "p")
        for _ in range(300):
            readers.append(subprocess.Popen(["cat", str(m / "p")], stdout=subprocess.DEVNULL))
        wait_for(lambda: all(proc_state(r.pid) in ("S", "D") for r in readers), 60,
                 interval=0.2, what="300 blocked readers")
        time.sleep(1)
        last = readers[-1]
        start = time.monotonic()
        last.send_signal(signal.SIGINT)
        last.wait(10)
        assert time.monotonic() - start < 2.0
        assert last.returncode == -signal.SIGINT
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
        for r in readers:
            r.wait()
        m.stop()


def test_a_record_written_as_its_blocked_reader_is_killed_goes_to_the_next_reader(mount):
    """kill -9 leaves a blocked reader in the kernel until the daemon answers,
    and the kernel's interrupt comes only once the killed process runs
    again.  A record written in that moment must not be handed to the dying
    process, where it would be lost: a local FIFO never hands it over."""
    pipes = [mount / f"p{i}" for i in range(5)]  # five tries
    for i, pipe in enumerate(pipes):
        os.mkfifo(pipe)
        cat = spawn(["cat", str(pipe)])
        wait_blocked(cat)
        cat.kill()
        fd = os.open(pipe, os.O_WRONLY)  # at once: before the daemon looks
        os.write(fd, b"record %d\n" % i)
        os.close(fd)
        cat.wait(5)
    for i, pipe in enumerate(pipes):
        got = run(["timeout", "5", "head", "-c", "9", str(pipe)]).stdout
        assert got == b"record %d\n" % i



@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
def test_a_request_withdrawn_before_the_daemon_reads_it_does_not_freeze_the_mount(
        make_mount, tmp_path):
    """pyfuse3 reads /dev/fuse, holding the GIL, once trio said it is readable.
    If the one queued request is withdrawn in between (its process was
    killed), that read blocks and nothing else in the daemon runs until
    another request comes.  strace holds the daemon's next read of /dev/fuse
    for 2 s while the requester is killed; then a record written on another
    mount of the store must still reach a reader blocked on this one, which
    sends nothing more to the daemon meanwhile."""
    a = make_mount(name="a")
    b = make_mount(name="b")
    os.mkfifo(a / "p")
    cat = spawn(["cat", str(a / "p")])
    wait_blocked(cat)
    trace_log = tmp_path / "strace.txt"
    tracer = subprocess.Popen(
        [STRACE, "-P", "/dev/fuse", "-e", "trace=read",
         "-e", "inject=read:delay_enter=2000000:when=1", "-p", str(a.pid)],
        stderr=open(trace_log, "w"))
    try:
        wait_for(lambda: "attached" in trace_log.read_text(), 10, what="strace to attach")
        time.sleep(0.3)
        asker = subprocess.Popen(["stat", str(a / "no-such-pipe")], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # the daemon's read of its request is held by strace
        asker.kill()  # the kernel withdraws the request the daemon has not read yet
        asker.wait(5)
        time.sleep(2.5)  # the held read has started, on an empty queue
        tracer.terminate()
        tracer.wait(10)
        assert "read(" in trace_log.read_text(), "strace saw no read of /dev/fuse"
        with open(b / "p", "wb", buffering=0) as w:
            w.write(b"through\n")
        out = b""
        deadline = time.monotonic() + 5
        while b"through" not in out and time.monotonic() < deadline:
            if select.select([cat.stdout], [], [], 0.2)[0]:
                out += os.read(cat.stdout.fileno(), 100)
        assert out == b"through\n", "the mount froze: the blocked reader got nothing in 5 s"
    finally:
        if tracer.poll() is None:
            tracer.kill()
        cat.kill()
        cat.wait(10)


# -- across PID namespaces -----------------------------------------------------
# A daemon in a container or pod and readers on the host (or the other way
# round).  FUSE reports a caller outside the daemon's PID namespace as pid 0,
# so the daemon cannot look at its signals: only the kernel's interrupt of
# the request can end the wait.  `unshare --pid --fork` stands in for the
# container; without --mount-proc, which would also give the daemon a mount
# namespace of its own (every mount here is private) and hide its mount.

NEW_PID_NS = ["unshare", "--pid", "--fork", "--"]


def _descendants(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []
    return children + [d for c in children for d in _descendants(c)]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


@pytest.fixture
def mount_in_own_pid_ns(tmp_path):
    """The daemon as PID 1 of a PID namespace of its own (in the foreground:
    a daemonized one would end with the namespace's first process)."""
    m = Mount.under(tmp_path, "ns", ["--store", str(tmp_path / "store.sqlite")],
                    wrap=lambda argv: [*NEW_PID_NS, *argv], foreground=True).start()
    yield m
    daemons = [p for p in _descendants(m.pid) if _comm(p) != "unshare"]
    for pid in daemons:  # unshare does not pass SIGTERM on: the daemon's own stop
        os.kill(pid, signal.SIGTERM)
    m.stop()


def _signal_ends_the_read(cat: subprocess.Popen, pid: int, sig: int) -> float:
    start = time.monotonic()
    os.kill(pid, sig)
    cat.wait(5)
    return time.monotonic() - start


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_host_reader_of_a_daemon_in_another_pid_namespace_dies_within_a_second(
        mount_in_own_pid_ns, sig):
    m = mount_in_own_pid_ns
    os.mkfifo(m / "p")
    cat = spawn(["cat", str(m / "p")])
    wait_blocked(cat)
    assert _signal_ends_the_read(cat, cat.pid, sig) < 1.0
    assert cat.returncode == -sig
    # The pipe still works, and nothing was taken for the dead reader.
    run(f"printf after > {m / 'p'}", shell=True)
    assert run(["timeout", "5", "head", "-c", "5", str(m / "p")]).stdout == b"after"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_reader_in_another_pid_namespace_dies_within_a_second(mount, sig):
    """The reverse: the daemon on the host, the reader in a container.  bash
    as the namespace's PID 1 runs cat in the foreground (SIGINT not ignored,
    and cat is no namespace init, which would ignore SIGINT and SIGTERM)."""
    os.mkfifo(mount / "p")
    shell = spawn([*NEW_PID_NS, "bash", "-c", f"cat {mount / 'p'}; exit $?"])
    wait_for(lambda: any(_comm(p) == "cat" for p in _descendants(shell.pid)), 10,
             what="cat in the new PID namespace")
    cat_pid = next(p for p in _descendants(shell.pid) if _comm(p) == "cat")
    wait_for(lambda: proc_state(cat_pid) in ("S", "D"), 10, what="cat to block")
    time.sleep(0.2)
    assert _signal_ends_the_read(shell, cat_pid, sig) < 1.0
    assert shell.returncode in (128 + sig, -sig), shell.communicate()


def test_ctrl_z_of_a_reader_invisible_to_the_daemon_stops_it_and_fg_resumes_it(
        mount_in_own_pid_ns):
    """Ctrl-Z also makes the kernel interrupt the read: the process stops at
    once, and after `fg` cat reads again (GNU cat retries EINTR).  SIGSTOP
    stands in for Ctrl-Z's SIGTSTP, which the kernel discards when the test
    runs in an orphaned process group (pytest started in the background)."""
    m = mount_in_own_pid_ns
    os.mkfifo(m / "p")
    cat = spawn(["cat", str(m / "p")])
    wait_blocked(cat)
    cat.send_signal(signal.SIGSTOP)
    wait_for(lambda: proc_state(cat.pid) == "T", 1, what="cat to stop")
    cat.send_signal(signal.SIGCONT)
    wait_blocked(cat)
    run(f"printf resumed > {m / 'p'}", shell=True)
    assert peek_until(cat, b"resumed", 5) == b"resumed"
    cat.kill()
    cat.wait(5)


def test_umount_on_the_host_does_not_signal_a_pid_of_another_namespace(mount_in_own_pid_ns):
    """The daemon's pid as it sees it (1 here) names another process on the
    host: `dnpfs umount` refuses, with one line, and the mount goes on."""
    m = mount_in_own_pid_ns
    assert os.getxattr(m.path, "user.dnpfs.pid") == b"1"
    result = run([*DNPFS, "umount", str(m.path)], check=False)
    assert result.returncode != 0
    assert b"another PID namespace" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert m.proc.poll() is None
    os.mkfifo(m / "p")
    run(f"printf still > {m / 'p'}", shell=True)
    assert run(["timeout", "5", "head", "-c", "5", str(m / "p")]).stdout == b"still"

"""Work queues (issue #28): bash `while read` workers on three daemonized
mounts of one store compete in the default group.

On both backends: on Kafka (4.2 and later) the default group is a share
group (dnpfs/backends/kafka/_share.py); on older brokers these are skipped.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from ..kafka.admin import whole_records
from ..util import spawn, wait_blocked, wait_for


@pytest.fixture(autouse=True)
def _work_queue(backend_args):
    if not whole_records(backend_args):
        pytest.skip("this broker has no share groups: one mount at a time reads a group,"
                    " byte by byte (docs/kafka.md)")

# A worker as users write one; SIGINT/SIGTERM restored (a background job of a
# non-interactive shell ignores SIGINT).
WORKER = 'trap - INT TERM; while IFS= read -r line; do printf "%s\\n" "$line" >> "$1"; done < "$2"'


def _workers(tmp_path, pipes):
    outs = [tmp_path / f"worker{i}.out" for i in range(len(pipes))]
    procs = [spawn(["bash", "-c", WORKER, "worker", str(out), str(pipe)],
                   start_new_session=True) for out, pipe in zip(outs, pipes)]
    return outs, procs


def _lines(outs) -> list[list[str]]:
    return [out.read_text().splitlines() if out.exists() else [] for out in outs]


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def test_three_bash_workers_on_three_mounts_get_every_line_whole_once(make_mount,
                                                                      backend_args, tmp_path):
    a, b, c = (make_mount(backend_args, n) for n in "abc")
    os.mkfifo(a / "jobs")
    outs, procs = _workers(tmp_path, [a / "jobs", b / "jobs", c / "jobs"])
    try:
        for p in procs:
            wait_blocked(p, timeout=30)
        want = [f"job {i:03d} {'x' * 20}" for i in range(300)]
        # One writer, one write() per line (bash's echo).
        writer = spawn(["bash", "-c", 'for i in $(seq -f %03g 0 299); do'
                        ' echo "job $i xxxxxxxxxxxxxxxxxxxx"; done > "$1"', "w", str(a / "jobs")])
        assert writer.wait(120) == 0
        wait_for(lambda: sum(map(len, _lines(outs))) >= 300, timeout=180,
                 what="300 lines to reach the workers")
        time.sleep(0.5)  # nothing more may come
        got = _lines(outs)
    finally:
        _stop(procs)
    assert sorted(line for lines in got for line in lines) == want, \
        "a line torn between workers, lost, or delivered twice"
    assert all(got), f"a worker got nothing: {[len(g) for g in got]}"


SLOW_WORKER = ('trap - INT TERM; while IFS= read -r line; do printf "%s\\n" "$line" >> "$1";'
               ' sleep 300; done < "$2"')


def test_a_worker_killed_over_its_line_leaves_it_to_another_worker(make_mount, backend_args,
                                                                   tmp_path):
    a, b = (make_mount(backend_args, n) for n in "ab")
    os.mkfifo(a / "jobs")
    doomed_out, doomed = tmp_path / "doomed.out", None
    doomed = spawn(["bash", "-c", SLOW_WORKER, "w", str(doomed_out), str(a / "jobs")],
                   start_new_session=True)
    procs = [doomed]
    try:
        wait_blocked(doomed, timeout=30)
        with open(a / "jobs", "w") as w:
            w.write("the job\n")
        wait_for(lambda: doomed_out.exists() and doomed_out.read_text() == "the job\n",
                 timeout=60, what="the first worker to take the job")
        os.killpg(doomed.pid, signal.SIGKILL)  # bash and its sleep, as a host going down
        doomed.wait(10)
        outs, others = _workers(tmp_path, [b / "jobs"])
        procs += others
        wait_for(lambda: _lines(outs) == [["the job"]], timeout=60,
                 what="the killed worker's job to reach the other worker")
    finally:
        _stop(procs)


def test_when_the_writer_ends_one_worker_gets_eof_and_the_others_wait(make_mount,
                                                                      backend_args, tmp_path):
    # As on a local FIFO: EOF goes to the reader that reads the writer's end;
    # the other workers block until a writer comes again.
    a, b, c = (make_mount(backend_args, n) for n in "abc")
    os.mkfifo(a / "jobs")
    outs, procs = _workers(tmp_path, [a / "jobs", b / "jobs", c / "jobs"])
    try:
        for p in procs:
            wait_blocked(p, timeout=30)
        with open(a / "jobs", "w") as w:
            for i in range(30):
                w.write(f"job {i}\n")
                w.flush()
        wait_for(lambda: sum(map(len, _lines(outs))) >= 30, timeout=120,
                 what="30 lines to reach the workers")
        wait_for(lambda: any(p.poll() is not None for p in procs), timeout=30,
                 what="a worker to see EOF")
        time.sleep(1.0)
        ended = [p for p in procs if p.poll() is not None]
        assert len(ended) == 1 and ended[0].returncode == 0
        waiting = [p for p in procs if p.poll() is None]
        for p in waiting:
            wait_blocked(p, timeout=30)
        with open(b / "jobs", "w") as w:
            w.write("late job\n")
        wait_for(lambda: "late job" in sum(_lines(outs), []), timeout=60,
                 what="a waiting worker to take a later writer's line")
        assert sorted(sum(_lines(outs), [])) == sorted([f"job {i}" for i in range(30)]
                                                       + ["late job"])
    finally:
        _stop(procs)


JOB_WORKER = ('trap - INT TERM; while IFS= read -r line; do sleep 0.2;'
              ' printf "%s\\n" "$line" >> "$1"; done < "$2"')


def test_thirty_jobs_of_a_fifth_of_a_second_share_three_mounts(make_mount, backend_args,
                                                                tmp_path):
    a, b, c = (make_mount(backend_args, n) for n in "abc")
    os.mkfifo(a / "jobs")
    outs = [tmp_path / f"w{i}.out" for i in range(3)]
    procs = [spawn(["bash", "-c", JOB_WORKER, "w", str(o), str(m / "jobs")],
                   start_new_session=True) for o, m in zip(outs, (a, b, c))]
    try:
        for p in procs:
            wait_blocked(p, timeout=30)
        start = time.monotonic()
        with open(a / "jobs", "w") as w:
            for i in range(30):  # a write() per job: a record is a job
                w.write(f"job {i}\n")
                w.flush()
        wait_for(lambda: sum(map(len, _lines(outs))) >= 30, timeout=120,
                 what="30 jobs done")
        wall = time.monotonic() - start
    finally:
        _stop(procs)
    shares = [len(lines) for lines in _lines(outs)]
    serial = 30 * 0.2
    # A third of the serial time is 2 s; the margin is for a loaded machine.
    assert wall < serial * 0.6, f"wall {wall:.1f}s for serial {serial:.1f}s, shares {shares}"
    assert min(shares) >= 6, f"unfair shares {shares} (wall {wall:.1f}s)"
    print(f"30 x 0.2 s jobs, 3 workers on 3 mounts: wall {wall:.2f}s (serial {serial}s),"
          f" shares {shares}")


def test_a_line_that_kills_every_worker_is_set_aside_and_listed(make_mount, backend_args,
                                                                 tmp_path):
    import json

    from dnpfs.backends.base import MAX_DELIVERIES

    a, b = (make_mount(backend_args, n) for n in "ab")
    os.mkfifo(a / "jobs")
    with open(a / "jobs", "w") as w:
        w.write("poison\n")
        w.flush()
        w.write("fine\n")
    procs = []
    try:
        for n in range(MAX_DELIVERIES):
            out = tmp_path / f"victim{n}.out"
            victim = spawn(["bash", "-c", SLOW_WORKER, "w", str(out), str((a, b)[n % 2] / "jobs")],
                           start_new_session=True)
            procs.append(victim)
            wait_for(lambda: out.exists() and out.read_text() == "poison\n", timeout=60,
                     what=f"delivery {n + 1} of the poison line")
            if n:
                assert os.getxattr((a, b)[n % 2] / "jobs", "user.dnpfs.redelivered.default") \
                    == b"1"
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            # The kernel releases a dead process's file after its exit, on its
            # own time: until then the line is the dead handle's, and the
            # next worker would take "fine" first.
            mount = (a, b)[n % 2]
            wait_for(lambda: not json.loads(os.getxattr(mount / "jobs", "user.dnpfs.stat"))
                     ["groups"].get("", {}).get("readers_here"), timeout=30,
                     what=f"the kernel to release victim {n}'s handle")
        outs, last = _workers(tmp_path, [b / "jobs"])
        procs += last
        wait_for(lambda: _lines(outs) == [["fine"]], timeout=60,
                 what="the next worker to get the next line")
        assert os.getxattr(a / "jobs", "user.dnpfs.set_aside.default") == b"1"
        # Kafka's broker archives the record and lists it nowhere: the mount
        # that set it aside (the last delivery's, a) lists it.
        shown = a if "--kafka" in backend_args else b
        stat = json.loads(os.getxattr(shown / "jobs", "user.dnpfs.stat"))
        (aside,) = stat["groups"][""]["set_aside_records"]
        assert (aside["data"], aside["deliveries"]) == ("poison\n", MAX_DELIVERIES)
    finally:
        _stop(procs)


def test_a_single_worker_gets_the_lines_in_the_writers_order(make_mount, backend_args, tmp_path):
    a, b = (make_mount(backend_args, n) for n in "ab")
    os.mkfifo(a / "jobs")
    outs, procs = _workers(tmp_path, [b / "jobs"])
    try:
        wait_blocked(procs[0], timeout=30)
        want = [f"line {i:03d}" for i in range(200)]
        writer = spawn(["bash", "-c", 'for i in $(seq -f %03g 0 199); do echo "line $i"; done'
                        ' > "$1"', "w", str(a / "jobs")])
        assert writer.wait(120) == 0
        wait_for(lambda: procs[0].poll() is not None, timeout=120, what="the worker's EOF")
        assert _lines(outs) == [want]
    finally:
        _stop(procs)

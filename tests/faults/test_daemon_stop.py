"""SIGTERM to a daemon under load: what writers handed over is stored, blocked
readers get EOF, and the mount is gone within 5 s."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ..util import mounted, proc_state, wait_for
from .conftest import make_plain_mount
from .agent import parse
from .workload import Reader, Writer, records_of, stop_all, wait_delivered

WRITERS = 4
BLOCKED = 20


def test_sigterm_under_load_flushes_wakes_readers_and_unmounts(backend, backend_args, tmp_path,
                                                               reliability):
    reliability.row(
        fault=f"SIGTERM to a daemon with {WRITERS} writers streaming (no fsync) and {BLOCKED}"
              f" readers blocked on it ({backend})",
        expected="every record whose write() returned is stored and delivered to a reader on"
                 " another mount; blocked readers get EOF (exit 0); daemon and mount gone"
                 " within 5 s")
    a = make_plain_mount(tmp_path, "a", backend_args).start()
    b = make_plain_mount(tmp_path, "b", backend_args).start()
    agents = []
    cats = []
    try:
        os.mkfifo(a / "p")
        os.mkfifo(a / "idle")
        wait_for(lambda: os.path.exists(b / "p"), 5, what="the pipe on mount b")
        reader = Reader(b / "p", tmp_path / "r.log", packet=False)
        agents.append(reader)
        # Half wait on an empty pipe, half read pipe p as their own group.
        cats = [subprocess.Popen(["cat", str(a / ("idle" if i % 2 else "p@late"))],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for i in range(BLOCKED)]
        wait_for(reader.opened, 10, what="reader open")
        writers = [Writer(a / "p", f"w{i}", tmp_path / f"w{i}.log", rate=500, pad=100)
                   for i in range(WRITERS)]
        agents += writers
        wait_for(lambda: all(proc_state(c.pid) in ("S", "D") for c in cats), 20,
                 what="blocked readers")
        time.sleep(3)
        start = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        try:
            code = a.proc.wait(15)
            exited = round(time.monotonic() - start, 2)
        except subprocess.TimeoutExpired:
            code, exited = None, "still running after 15 s"
        try:
            wait_for(lambda: not mounted(a.path), 5, what="the mount to go")
            gone = time.monotonic() - start
        except AssertionError:
            gone = float("inf")
        cat_codes, cat_took = [], []
        for c in cats:
            try:
                c.wait(10)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
            cat_codes.append(c.returncode)
        cat_took = time.monotonic() - start
        for w in writers:
            w.stop(timeout=30)
        # Handed over = write() returned: delivered even without fsync or close.
        handed = [(w.wid, s) for w in writers for s in range(w.written() + 1)]
        d = wait_delivered(writers, [reader], timeout=30)
        delivered = set()
        for _, line in records_of(reader)[0]:
            p = parse(line)
            if p:
                delivered.add(p[:2])
        lost = sorted(set(handed) - delivered)
        eof_cats = sum(c == 0 for c in cat_codes)
        reliability.measure(
            daemon_exit_code=code, daemon_exited_s=exited, mount_gone_s=round(gone, 2),
            blocked_readers_eof=f"{eof_cats}/{len(cats)}", blocked_readers_done_s=round(cat_took, 2),
            handed_over=len(handed), handed_over_lost=len(lost), duplicates=d.duplicates,
            writer_errors=sorted({f"{e['op']}:{e['err']}" for w in writers for e in w.errors()}),
        )
        assert not lost, f"{len(lost)} records handed over (write() returned) not stored: {lost[:10]}"
        assert gone < 5, f"mount still there after {gone:.1f} s"
        assert code == 0, f"daemon exit status {code} ({exited})"
        assert eof_cats == len(cats), f"blocked readers: exit codes {cat_codes}"
        assert d.corrupt == 0 and d.out_of_order == 0, d.summary()
    finally:
        for c in cats:
            if c.poll() is None:
                c.kill()
                c.wait()
        stop_all(agents)
        a.stop()
        b.stop()

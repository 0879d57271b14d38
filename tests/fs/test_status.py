"""`dnpfs status` and the pipes' extended attributes, as an operator reads them."""

from __future__ import annotations

import json
import os
import subprocess

from ..conftest import DNPFS, ROOT
from ..util import run


def status(*args):
    r = subprocess.run([*DNPFS, "status", *map(str, args)], capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_status_table_json_and_getfattr(make_mount):
    m = make_mount()
    os.mkfifo(m / "jobs")
    os.mkfifo(m / "idle")
    run(f"printf 'one\\n' > {m/'jobs'}; printf 'three\\n' > {m/'jobs'}", shell=True)
    assert run(["cat", str(m / "jobs@audit")]).stdout == b"one\n"  # audit consumed "one"
    w = open(m / "jobs", "wb", buffering=0)
    try:
        doc = json.loads(status(m.path, "--json"))
        assert doc["health"] == "ok" and doc["pid"] == m.pid
        jobs = next(p for p in doc["pipes"] if p["pipe"] == "jobs")
        assert jobs["records"] == 2 and jobs["bytes"] == 10
        assert jobs["writers_here"] == 1
        assert jobs["groups"][""]["backlog_records"] == 2
        assert jobs["groups"]["audit"] == {"backlog_records": 1, "backlog_bytes": 6,
                                           "readers_here": 0, "redelivered": 0,
                                           "set_aside": 0}

        table = status(m.path)
        assert "health: ok" in table
        line = next(l for l in table.splitlines() if l.startswith("jobs"))
        assert line.split()[:5] == ["jobs", "2", "10", "1", "0"]
        assert "audit 1/6" in line

        attrs = run(["getfattr", "-d", str(m / "jobs")]).stdout.decode()
        assert 'user.dnpfs.backlog.default="2 records, 10 bytes"' in attrs
        assert 'user.dnpfs.writers_here="1"' in attrs
        assert 'user.dnpfs.set_aside.default="0"' in attrs
        assert status().count(str(m.path)) == 1  # without a mountpoint: every mount
    finally:
        w.close()


def test_status_of_a_non_mount_is_one_line(tmp_path):
    r = subprocess.run([*DNPFS, "status", str(tmp_path)], capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert r.returncode == 1
    assert r.stderr.strip() == f"dnpfs: {tmp_path} is not a dnpfs mount"


def test_status_lists_a_dead_mount_without_failing(make_mount):
    m = make_mount()
    m.kill()  # a stale mount, as a crash leaves it
    out = status()
    line = next(l for l in out.splitlines() if l.startswith(str(m.path)))
    assert "not answering" in line

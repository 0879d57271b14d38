"""Structured logs and the Prometheus endpoint, read as a collector would."""

from __future__ import annotations

import json
import os
import socket
import urllib.request

from ..util import run, spawn, wait_blocked, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {line.split()[0]: float(line.split()[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_count_what_users_did(make_mount):
    port = free_port()
    m = make_mount(extra=["--metrics", f"127.0.0.1:{port}"])
    os.mkfifo(m / "p")
    cat = spawn(["cat", str(m / "p")])
    wait_blocked(cat)
    wait_for(lambda: scrape(port)["dnpfs_blocked_readers"] == 1, 5, what="the blocked reader")
    run(f"printf 'twelve bytes' > {m/'p'}", shell=True)
    assert cat.communicate(timeout=5)[0] == b"twelve bytes"
    # A record counts as in once its store call returned; a reader on this
    # mount may see it (and cat exit) a moment before that.
    wait_for(lambda: scrape(port)["dnpfs_records_in_total"] >= 3, 5,
             what="BEGIN, the data and END counted")
    got = scrape(port)
    assert got["dnpfs_bytes_in_total"] == 12 and got["dnpfs_bytes_out_total"] == 12
    assert got["dnpfs_records_in_total"] >= 3  # BEGIN, the data, END
    assert got["dnpfs_blocked_readers"] == 0
    assert got['dnpfs_append_seconds_bucket{le="+Inf"}'] == got["dnpfs_append_seconds_count"] >= 1
    assert got["dnpfs_delivery_errors_total"] == 0


def test_json_logs_are_one_object_per_line(make_mount):
    m = make_mount(extra=["--log-format", "json"])
    os.mkfifo(m / "p")
    m.stop()
    lines = [l for l in m.log_text().splitlines() if l.strip()]
    entries = [json.loads(l) for l in lines]
    assert any(e["message"].startswith("mounted") for e in entries)
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)

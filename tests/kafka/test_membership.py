"""Which mount reads a reader group, as an operator sees it (a named group:
one mount at a time; the default group: a share group, every mount); readers of
several groups of one pipe on one mount (they share the mount's fetches); and
a group whose next records were deleted under it (retention, or
kafka-delete-records), which reads on from the log's first record."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from ..conftest import DNPFS, ROOT
from ..util import membership, peek_until, run, spawn, wait_blocked, wait_for
from .admin import has_share_groups
from .admin import run as run_async

pytestmark = pytest.mark.kafka


def test_status_shows_which_mount_reads_and_the_standby_takes_over(kafka_bootstrap, make_mount):
    # A named group: the default one is a share group (next test).
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", f"m{uuid.uuid4().hex[:8]}."]
    a, b = make_mount(args, "a"), make_mount(args, "b")
    os.mkfifo(a / "jobs")
    wait_for(lambda: os.path.exists(b / "jobs"), 5, what="the pipe on mount b")
    assert membership(a / "jobs", "work") is None  # no reader here: no part in the group
    first = spawn(["cat", str(a / "jobs@work")])
    wait_blocked(first)
    wait_for(lambda: membership(a / "jobs", "work") == "reading", 20, what="mount a reading")
    second = spawn(["cat", str(b / "jobs@work")])
    wait_blocked(second)
    cats = {"a": first, "b": second}
    try:
        # One of the two reads, the other waits: which one is the group's choice.
        wait_for(lambda: {membership(a / "jobs", "work"), membership(b / "jobs", "work")} == {"reading", "standby"},
                 30, what="one mount reading, the other on standby")
        reading, standby = (a, b) if membership(a / "jobs", "work") == "reading" else (b, a)
        doc = json.loads(subprocess.run([*DNPFS, "status", str(standby.path), "--json"], cwd=ROOT,
                                        capture_output=True, text=True, timeout=30).stdout)
        [jobs] = doc["pipes"]
        assert jobs["groups"]["work"]["membership"] == "standby"
        assert jobs["groups"]["work"]["readers_here"] == 1
        table = subprocess.run([*DNPFS, "status", str(reading.path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout
        assert "(reading)" in next(l for l in table.splitlines() if l.startswith("jobs"))

        w = open(a / "jobs", "wb", buffering=0)
        w.write(b"one\n")
        assert peek_until(cats[reading.path.name], b"one\n", 10) == b"one\n"
        cats[reading.path.name].kill()
        cats[reading.path.name].wait()
        # The reading mount's last reader left: the group moves to the other.
        wait_for(lambda: membership(standby / "jobs", "work") == "reading", 30,
                 what="the standby mount reading")
        w.write(b"two\n")
        w.close()
        out, _ = cats[standby.path.name].communicate(timeout=20)
        assert out == b"two\n" and cats[standby.path.name].returncode == 0
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("option", [[], ["--share-groups", "auto"]], ids=["default", "auto"])
def test_the_default_group_is_a_share_group_that_every_mount_reads(kafka_bootstrap, make_mount,
                                                                   option):
    # By default (--share-groups auto), where the broker has share groups; on
    # 3.9 the default group is handed over.
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", f"m{uuid.uuid4().hex[:8]}.", *option]
    a, b = make_mount(args, "a"), make_mount(args, "b")
    os.mkfifo(a / "jobs")
    wait_for(lambda: os.path.exists(b / "jobs"), 5, what="the pipe on mount b")
    assert membership(a / "jobs") is None
    cats = [spawn(["cat", str(m / "jobs")]) for m in (a, b)]
    try:
        for cat in cats:
            wait_blocked(cat)
        if not has_share_groups(kafka_bootstrap):  # 3.9: the hand-over, as for named groups
            wait_for(lambda: {membership(a / "jobs"), membership(b / "jobs")}
                     == {"reading", "standby"}, 30, what="one mount reading, one on standby")
            table = subprocess.run([*DNPFS, "status", str(b.path)], cwd=ROOT,
                                   capture_output=True, text=True, timeout=30).stdout
            assert "default group: consumer group (this broker has no share groups)" \
                in table.splitlines()[0], table
            return
        wait_for(lambda: membership(a / "jobs") == membership(b / "jobs") == "share group", 20,
                 what="both mounts in the share group")
        table = subprocess.run([*DNPFS, "status", str(b.path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout
        assert "default group: share group" in table.splitlines()[0], table
        assert "(share group)" in next(l for l in table.splitlines() if l.startswith("jobs"))
    finally:
        for cat in cats:
            cat.kill()
            cat.wait()


def test_with_share_groups_never_the_default_group_is_a_consumer_group(kafka_bootstrap,
                                                                       make_mount):
    """With --share-groups never the default group is handed over between
    the mounts (one reads, the other waits), also on a broker with share
    groups; `dnpfs status` says which."""
    args = ["--kafka", kafka_bootstrap, "--topic-prefix", f"m{uuid.uuid4().hex[:8]}.",
            "--share-groups", "never"]
    a, b = make_mount(args, "a"), make_mount(args, "b")
    os.mkfifo(a / "jobs")
    wait_for(lambda: os.path.exists(b / "jobs"), 5, what="the pipe on mount b")
    cats = [spawn(["cat", str(m / "jobs")]) for m in (a, b)]
    try:
        for cat in cats:
            wait_blocked(cat)
        wait_for(lambda: {membership(a / "jobs"), membership(b / "jobs")}
                 == {"reading", "standby"}, 30, what="one mount reading, one on standby")
        table = subprocess.run([*DNPFS, "status", str(b.path)], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout
        assert "default group: consumer group (--share-groups never)" in table.splitlines()[0]
        row = next(l for l in table.splitlines() if l.startswith("jobs"))
        assert "(reading)" in row or "(standby)" in row, row
    finally:
        for cat in cats:
            cat.kill()
            cat.wait()


def test_an_unknown_share_groups_value_is_one_line(kafka_bootstrap, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([*DNPFS, "mount", "--kafka", kafka_bootstrap, "--share-groups", "always",
                        str(mnt)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]  # after argparse's usage
    assert "--share-groups" in last and "auto" in last, r.stderr


def test_groups_of_one_pipe_read_side_by_side_on_one_mount(kafka_bootstrap, make_mount):
    m = make_mount(["--kafka", kafka_bootstrap, "--topic-prefix", f"m{uuid.uuid4().hex[:8]}."])
    os.mkfifo(m / "feed")
    w = open(m / "feed", "wb", buffering=0)  # one session throughout: no EOF between
    w.write(b"old\n")
    assert run(["head", "-c", "4", str(m / "feed")]).stdout == b"old\n"
    # The default group is past "old"; a new group starts at the oldest record.
    # One mount fetches for all three from the lowest position: each gets its own.
    readers = {g: spawn(["cat", str(m / f"feed{g}")]) for g in ("", "@audit", "@billing")}
    for g in ("@audit", "@billing"):
        assert peek_until(readers[g], b"old\n", 20) == b"old\n"
    wait_blocked(readers[""])
    lines = b"".join(b"line %d\n" % i for i in range(2000))
    for i in range(0, len(lines), 4096):
        w.write(lines[i:i + 4096])
    w.close()
    outs = {g: r.communicate(timeout=30)[0] for g, r in readers.items()}
    assert outs[""] == lines
    assert outs["@audit"] == outs["@billing"] == lines  # "old" was peeked above


def test_a_group_whose_records_were_deleted_reads_on_from_the_log_start(kafka_bootstrap,
                                                                       make_mount):
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from aiokafka.structs import TopicPartition

    prefix = f"m{uuid.uuid4().hex[:8]}."
    m = make_mount(["--kafka", kafka_bootstrap, "--topic-prefix", prefix])
    os.mkfifo(m / "old")
    w = open(m / "old", "wb", buffering=0)  # one session throughout
    for i in range(6):
        w.write(b"rec %d\n" % i)
    os.fsync(w.fileno())
    # A named group: a consumer group with a cursor (the default group is a
    # share group, whose start the broker moves past deleted records itself).
    assert run(["head", "-c", "6", str(m / "old@g")]).stdout == b"rec 0\n"  # cursor past rec 0

    async def delete_all_but_the_last_two() -> None:
        tp = TopicPartition(prefix + "old", 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
        await consumer.start()
        try:
            end = (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_records({tp: RecordsToDelete(before_offset=end - 2)})
        finally:
            await admin.close()

    run_async(delete_all_but_the_last_two())
    # The group's cursor (at rec 1) is gone from the log: the next reader gets
    # what the log still holds, then what comes, and does not hang.
    reader = spawn(["cat", str(m / "old@g")])
    try:
        assert peek_until(reader, b"rec 4\nrec 5\n", 20) == b"rec 4\nrec 5\n"
        w.write(b"new\n")
        w.close()
        out, _ = reader.communicate(timeout=20)
        assert out == b"new\n" and reader.returncode == 0
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        m.stop()
        assert "is gone from the log; reading from" in open(m.log).read()

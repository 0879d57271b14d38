"""The embedded store's segment files (dnpfs/backends/sqlite/_segments.py):
record bytes outside SQLite, cut back to what the index names, removed with
the records that name them."""

from __future__ import annotations

import os
import sqlite3

import trio

from dnpfs.backends.sqlite import SqliteBackend, records_path
from dnpfs.backends.sqlite import _appends
from dnpfs.backends.sqlite._segments import segments_path
from dnpfs.delivery import ReaderView, take
from dnpfs.model import Kind, Record


def data(payload: bytes) -> Record:
    return Record(Kind.DATA, "m.1", payload)


async def read_all(backend, name, group=""):
    out, unreadable = b"", 0
    while True:
        def decide(fetched):
            taken = take(fetched.cursor, fetched.records, 1 << 20, view=ReaderView())
            return taken.cursor, taken

        taken = await backend.consume(name, group, 1 << 20, decide)
        out += taken.data
        unreadable += taken.unreadable
        if taken.size == 0 and not taken.unreadable:
            return out, unreadable


def run(body, store):
    async def main():
        async with trio.open_nursery() as nursery:
            async def opener(**kw):
                backend = SqliteBackend(store, **kw)
                await backend.start(nursery, lambda name, gone=False: None)
                return backend

            try:
                return await body(opener)
            finally:
                nursery.cancel_scope.cancel()

    return trio.run(main)


def segment_files(store) -> dict[str, int]:
    folder = segments_path(store)
    return {name: (folder / name).stat().st_size for name in sorted(os.listdir(folder))}


def test_the_bytes_are_in_segment_files_and_sqlite_holds_only_their_index(tmp_path):
    store = tmp_path / "s.sqlite"

    async def body(opener):
        a = await opener()
        await a.create_pipe("p")
        await a.append("p", [data(b"x" * 300_000), data(b"y" * 5)], durable=True)
        got = await read_all(a, "p")
        await a.close()
        return got

    got, unreadable = run(body, store)
    assert got == b"x" * 300_000 + b"y" * 5 and not unreadable
    assert sum(segment_files(store).values()) == 300_005
    db = sqlite3.connect(records_path(store))
    cols = {row[1] for row in db.execute("PRAGMA table_info(records)")}
    db.close()
    assert "data" not in cols and {"seg", "pos", "size"} <= cols


def test_bytes_no_index_row_names_are_cut_off_at_the_next_start(tmp_path):
    """A daemon killed between writing a batch and committing its index
    leaves bytes past the end: the next start cuts them, and the next append
    goes on from the indexed end."""
    store = tmp_path / "s.sqlite"

    async def first(opener):
        a = await opener()
        await a.create_pipe("p")
        await a.append("p", [data(b"kept")], durable=True)
        await a.close()

    run(first, store)
    (name, size), = segment_files(store).items()
    with open(segments_path(store) / name, "ab") as f:
        f.write(b"never indexed")

    async def second(opener):
        b = await opener()
        cut = segment_files(store)[name]
        await b.append("p", [data(b" and more")], durable=True)
        got = await read_all(b, "p")
        await b.close()
        return cut, got

    cut, (got, unreadable) = run(second, store)
    assert cut == size == 4
    assert got == b"kept and more" and not unreadable


def test_retention_removes_whole_segments_once_no_record_is_left_in_them(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setattr(_appends, "SEGMENT_BYTES", 1000)
    store = tmp_path / "s.sqlite"

    async def body(opener):
        a = await opener()
        await a.create_pipe("p")
        for i in range(5):
            await a.append("p", [data(bytes([65 + i]) * 600)], durable=False)
        files_written = len(segment_files(store))
        got = await read_all(a, "p")
        await a.apply_retention()
        files_left = len(segment_files(store))
        await a.append("p", [data(b"after")], durable=True)
        after = await read_all(a, "p")
        await a.close()
        return files_written, got, files_left, after

    files_written, (got, _), files_left, (after, _) = run(body, store)
    assert files_written == 3, "a segment that reached 1000 bytes takes no more records"
    assert got == b"".join(bytes([65 + i]) * 600 for i in range(5))
    assert files_left == 0, "every record consumed: every segment removed"
    assert after == b"after"


def test_a_deleted_pipe_leaves_no_segment_behind(tmp_path):
    store = tmp_path / "s.sqlite"

    async def body(opener):
        a = await opener()
        await a.create_pipe("p")
        await a.create_pipe("q")
        await a.append("p", [data(b"p" * 10)], durable=True)
        await a.append("q", [data(b"q" * 10)], durable=True)
        await a.delete_pipe("p")
        files = segment_files(store)
        await a.close()
        return files

    assert list(run(body, store).values()) == [10], "only q's segment is left"


def test_records_whose_segment_is_gone_are_a_read_error_not_made_up_bytes(tmp_path):
    store = tmp_path / "s.sqlite"

    async def body(opener):
        a = await opener()
        await a.create_pipe("p")
        await a.append("p", [data(b"lost")], durable=True)
        for name in segment_files(store):
            os.unlink(segments_path(store) / name)
        lost = await read_all(a, "p")
        await a.append("p", [data(b"next")], durable=True)  # into the segment, made anew
        after = await read_all(a, "p")
        await a.close()
        return lost, after

    lost, after = run(body, store)
    assert lost == (b"", 1)
    assert after == (b"next", 0)


def test_after_a_reboot_only_records_a_durable_append_covered_are_kept(tmp_path):
    """A power cut may keep index rows whose bytes never reached the disk
    (no close or fsync synced them): the first start in another boot drops
    those rows instead of reading whatever the disk holds there."""
    store = tmp_path / "s.sqlite"

    async def first(opener):
        a = await opener()
        await a.create_pipe("p")
        await a.append("p", [data(b"acknowledged")], durable=True)
        await a.append("p", [data(b" never synced")], durable=False)
        await a.close()

    run(first, store)
    db = sqlite3.connect(records_path(store))
    db.execute("UPDATE boot SET id = 'an earlier boot'")
    db.commit()
    db.close()

    async def second(opener):
        b = await opener()
        got = await read_all(b, "p")
        await b.append("p", [data(b", then more")], durable=True)
        more = await read_all(b, "p")
        await b.close()
        return got, more

    (got, unreadable), (more, _) = run(second, store)
    assert got == b"acknowledged" and not unreadable
    assert more == b", then more"


def test_without_a_reboot_a_killed_daemons_records_all_stay(tmp_path):
    """kill -9 loses nothing committed: the page cache keeps the bytes, and
    the same boot drops nothing at the next start."""
    store = tmp_path / "s.sqlite"

    async def first(opener):
        a = await opener()
        await a.create_pipe("p")
        await a.append("p", [data(b"one, ")], durable=True)
        await a.append("p", [data(b"two")], durable=False)
        # no close(): as if killed

    run(first, store)

    async def second(opener):
        b = await opener()
        got = await read_all(b, "p")
        await b.close()
        return got

    assert run(second, store) == (b"one, two", 0)


def test_removed_segments_are_closed_so_their_disk_space_comes_back(tmp_path, monkeypatch):
    """The writer and reader keep segments open; once retention removed one,
    the next segment they open closes it (an open descriptor would keep its
    disk space as long as the daemon runs)."""
    monkeypatch.setattr(_appends, "SEGMENT_BYTES", 1000)
    store = tmp_path / "s.sqlite"

    def held() -> int:
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            count += str(segments_path(store)) in target and target.endswith("(deleted)")
        return count

    async def body(opener):
        a = await opener()
        await a.create_pipe("p")
        for i in range(4):
            await a.append("p", [data(bytes([65 + i]) * 1000)], durable=False)
        await read_all(a, "p")
        await a.apply_retention()
        for i in range(2):  # into new segments: the writer and reader open them
            await a.append("p", [data(b"z" * 1000)], durable=False)
        await read_all(a, "p")
        still = held()
        await a.close()
        return still

    assert run(body, store) == 0


def test_segments_are_synced_ahead_so_a_close_waits_for_the_last_bytes_only(tmp_path,
                                                                           monkeypatch):
    """Past SYNC_AHEAD bytes written, the segments are synced in the
    background, before any close or fsync asks (SQLite's checkpoints did
    that for bytes inside SQLite; without it a close after 256 MiB waited
    for all of them to reach the disk)."""
    from dnpfs.backends.sqlite._segments import SegmentFiles

    monkeypatch.setattr(_appends, "SYNC_AHEAD", 1000)
    synced = []
    real = SegmentFiles.sync
    monkeypatch.setattr(SegmentFiles, "sync",
                        lambda self, pipe, seg: (synced.append(seg), real(self, pipe, seg)))
    store = tmp_path / "s.sqlite"

    async def body(opener):
        a = await opener()
        await a.create_pipe("p")
        await a.append("p", [data(b"x" * 600)], durable=False)
        before = list(synced)
        await a.append("p", [data(b"y" * 600)], durable=False)  # past 1000 bytes
        with trio.fail_after(5):
            while not synced:
                await trio.sleep(0.01)
        await a.close()
        return before

    assert run(body, store) == [], "nothing synced below SYNC_AHEAD"
    assert synced, "synced in the background past SYNC_AHEAD"


def test_a_cursor_move_does_not_wait_for_the_records_write_lock(tmp_path):
    """A read moves its group's cursor under the catalog's lock only: an
    append holding the records' lock (while it copies a batch into the
    segments) does not hold it up.  BEGIN IMMEDIATE locked both files."""
    store = tmp_path / "s.sqlite"

    async def body(opener):
        a = await opener(busy_ms=1000)
        await a.create_pipe("p")
        await a.append("p", [data(b"readable")], durable=True)
        other = sqlite3.connect(records_path(store), isolation_level=None, timeout=0)
        other.execute("BEGIN")
        other.execute("DELETE FROM boot WHERE 0")  # the records' write lock, as an append
        try:
            with trio.fail_after(5):
                got = await read_all(a, "p")
        finally:
            other.execute("ROLLBACK")
            other.close()
        await a.close()
        return got

    assert run(body, store) == (b"readable", 0)

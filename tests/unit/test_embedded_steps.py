"""The steps of a small record's way through the embedded store
(dnpfs/backends/sqlite/_appends.py, _reads.py): how many hand-overs and
transactions an append or a read takes, and how often a stream of small
appends commits.  Each step costs tens of microseconds on a loaded machine
(docs/decisions.md, "Embedded store: fewer steps for a small record")."""

from __future__ import annotations

import trio

from dnpfs.backends.sqlite import SqliteBackend
from dnpfs.backends.sqlite._appends import SMALL_LINGER
from dnpfs.backends.sqlite._batch import Batch
from dnpfs.backends.sqlite._conn import _LOCK, STREAM_GAP
from dnpfs.delivery import ReaderView, take
from dnpfs.model import Kind, Record

# Statements that take a write lock: of both files, or of one (_conn.transaction).
WRITE_LOCKS = ("BEGIN IMMEDIATE", *_LOCK.values())

PAUSE = STREAM_GAP + SMALL_LINGER + 0.02  # longer than any stream's gap


def data(payload: bytes) -> Record:
    return Record(Kind.DATA, "m.1", payload)


async def read(backend: SqliteBackend, name: str) -> bytes:
    def decide(fetched):
        taken = take(fetched.cursor, fetched.records, 1 << 16, view=ReaderView())
        return taken.cursor, taken

    return (await backend.consume(name, "", 1 << 16, decide)).data


def run(tmp_path, body):
    async def main():
        backend = SqliteBackend(tmp_path / "store" / "dnpfs.sqlite")
        async with trio.open_nursery() as nursery:
            await backend.start(nursery, lambda name, gone=False: None)
            try:
                with trio.fail_after(30):
                    return await body(backend)
            finally:
                with trio.CancelScope(shield=True):
                    await backend.close()
                nursery.cancel_scope.cancel()

    return trio.run(main)


def test_a_lone_append_or_read_after_a_pause_is_not_handed_to_the_batch_loop(
        tmp_path, monkeypatch):
    """Handing it to the loop and back were two trio task switches."""
    queued = []
    put = Batch.put
    monkeypatch.setattr(Batch, "put", lambda self, job: (queued.append(job), put(self, job)))

    async def body(backend):
        await backend.create_pipe("p")
        await backend.attach("p", "")
        await trio.sleep(PAUSE)
        queued.clear()
        await backend.append("p", [data(b"one")], durable=False)
        appended = list(queued)
        await trio.sleep(PAUSE)
        got = await read(backend, "p")
        return appended, list(queued), got

    appended, read_queued, got = run(tmp_path, body)
    assert got == b"one"
    assert appended == [], "the append went through the appends loop"
    assert read_queued == [], "the read went through the reads loop"


def test_a_lone_read_is_one_transaction_and_an_empty_read_takes_no_write_lock(tmp_path):
    """A read after a pause takes the write lock at once (one transaction,
    not a read snapshot and then the lock); the read right after it, which
    finds nothing, takes no write lock only to acknowledge the first."""

    async def body(backend):
        await backend.create_pipe("p")
        await backend.attach("p", "")
        await backend.append("p", [data(b"one")], durable=False)
        statements: list[str] = []
        backend._reads.conn.db.set_trace_callback(statements.append)
        await trio.sleep(PAUSE)
        first = await read(backend, "p")
        lone = [s for s in statements if s.startswith(("BEGIN", "COMMIT")) or s in WRITE_LOCKS]
        statements.clear()
        second = await read(backend, "p")
        empty = [s for s in statements if s in WRITE_LOCKS]
        backend._reads.conn.db.set_trace_callback(None)
        return first, second, lone, empty

    first, second, lone, empty = run(tmp_path, body)
    assert (first, second) == (b"one", b"")
    # The catalog's write lock alone (the records are only read: _conn.transaction).
    assert lone == ["BEGIN", _LOCK["main"], "COMMIT"], lone
    assert empty == [], empty


def test_a_stream_of_small_appends_commits_once_per_linger(tmp_path, monkeypatch):
    """dd bs=100: the commit, not the bytes, is what a small record costs."""
    commits = []

    async def body(backend):
        await backend.create_pipe("p")
        store = backend._appends._store
        monkeypatch.setattr(backend._appends, "_store",
                            lambda db, jobs, written: (commits.append(len(jobs)),
                                                       store(db, jobs, written))[1])
        outbox: list[Record] = []

        async def writer():  # ~10 write()s a millisecond, as a daemon keeps up with dd
            for i in range(100):
                outbox.extend(data(b"x" * 100) for _ in range(10))
                await trio.sleep(0.001)

        async def flusher(done):  # as writer.Outbox: every record queued meanwhile
            while not done.is_set() or outbox:
                if outbox:
                    batch = outbox[:]
                    outbox.clear()
                    await backend.append("p", batch, durable=False)
                else:
                    await trio.sleep(0)

        start = trio.current_time()
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flusher, done)
            await writer()
            done.set()
        return trio.current_time() - start

    took = run(tmp_path, body)
    assert len(commits) <= took / SMALL_LINGER + 3, (len(commits), took)


def test_messages_a_few_milliseconds_apart_never_wait_for_a_linger(tmp_path, monkeypatch):
    """Each record of a slow sequence is a batch of one: the long linger is
    for streams of many small records, or every message would wait out the
    linger the one before it started."""
    queued = []
    put = Batch.put
    monkeypatch.setattr(Batch, "put", lambda self, job: (queued.append(job), put(self, job)))

    async def body(backend):
        await backend.create_pipe("p")
        async with trio.open_nursery() as nursery:  # two at once: a stream of two
            for _ in range(2):
                nursery.start_soon(backend.append, "p", [data(b"first")], False)
        queued.clear()
        for _ in range(20):
            await trio.sleep(0.003)
            await backend.append("p", [data(b"message")], durable=False)

    run(tmp_path, body)
    assert len(queued) <= 2, f"{len(queued)} of 20 messages waited for the batch loop"


def test_index_rows_of_a_batch_go_in_by_multi_row_inserts_in_order(tmp_path):
    """A batch's index rows are inserted many per statement, in chunks of
    powers of two (_appends._insert): every record of a batch of 131 (64 +
    64 + 2 + 1 rows), markers among them, is indexed once, in order, at its
    bytes; and the statements are a handful, not one per row."""
    records = [Record(Kind.BEGIN, "m.2")]
    records += [data(b"%03d" % i * (i % 5)) for i in range(129)]  # some empty
    records.append(Record(Kind.END, "m.2"))

    async def body(backend):
        await backend.create_pipe("p")
        statements: list[str] = []
        db = backend._appends.conn.db
        db.set_trace_callback(statements.append)
        await backend.append("p", records, durable=False)
        db.set_trace_callback(None)
        rows = db.execute("SELECT kind, session, pos, size FROM data.records"
                          " ORDER BY id").fetchall()
        return rows, [s for s in statements if s.startswith("INSERT INTO data.records")]

    rows, inserts = run(tmp_path, body)
    expected, pos = [], 0
    for r in records:
        expected.append((r.kind.value, r.session, pos, len(r.data)))
        pos += len(r.data)
    assert rows == expected
    assert len(inserts) == 4, len(inserts)

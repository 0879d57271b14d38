"""The embedded store: files that any number of daemons on one host share.

One module per job, behind the ``SqliteBackend`` facade (``backend``):

- ``_schema``: the two SQLite files (catalog, records' index), their tables,
  and making or checking them;
- ``_segments``: the files that hold the records' bytes;
- ``_migrate``: moving a store of the previous layout (bytes inside SQLite)
  to segment files at its first mount;
- ``_conn``: a connection, its worker thread, and the retry when busy;
- ``_appends``: batched appends (group commit) and syncing the WAL;
- ``_reads``: group cursors and batched reads (fetch, decide, commit);
- ``_inflight``: reads in flight and their redelivery when a daemon died;
- ``_watch``: noticing what other daemons sharing the store did;
- ``_wake``: the bells daemons ring after a commit, so the others wake at once;
- ``_upkeep``: retention, heartbeats, stats.

Names: ``pipe_id`` is a pipe's row id; ``pid`` is always a process id.
"""

from ._schema import default_store_path, records_path
from .backend import SqliteBackend

__all__ = ["SqliteBackend", "default_store_path", "records_path"]

"""One table of API versions per broker answer, not one per connection.

Each aiokafka connection asks its broker which versions of each request it
takes (ApiVersions) and keeps the answer as a dict of ~80 tuples, and a
reading mount holds a connection or two per reader group (each member's
consumer has a client of its own): the largest single item of what a
reader group costs a mount (docs/decisions.md, "Kafka: what a reader group
costs a reading mount").  Every
connection to the same brokers gets the same answer: ``share_version_tables``
makes them share one dict (aiokafka only reads it, in ``Request.prepare``).

Leans on ``AIOKafkaConnection._do_version_lookup`` and ``_versions`` (listed
in ``INTERNALS``).  Process-wide, like the class it changes; idempotent.
"""

from __future__ import annotations

_tables: dict[frozenset, dict] = {}


def share_version_tables() -> None:
    from aiokafka.conn import AIOKafkaConnection

    lookup = AIOKafkaConnection._do_version_lookup
    if getattr(lookup, "dnpfs_shared", False):
        return

    async def shared_lookup(self) -> None:
        await lookup(self)
        table = self._versions
        self._versions = _tables.setdefault(frozenset(table.items()), table)

    shared_lookup.dnpfs_shared = True
    AIOKafkaConnection._do_version_lookup = shared_lookup

"""Kafka as the store: a pipe is a topic, a reader group a consumer group.

Only ``KafkaBackend`` is public; the asyncio side is private to this
package: ``_bridge`` (the asyncio thread), ``_cluster`` (makes and wires the
parts: ``_catalog``, ``_appender``, ``_groups`` with one ``_member`` per
reader group, ``_fetcher``, ``_liveness``; its docstring draws who calls
whom) and ``_shared`` (all the trio thread reads of them).  ``wire`` is the
record and cursor format other Kafka clients can follow
(docs/wire-format.md); ``config`` reads
the client settings file.  ``_aiokafka`` is the boundary with aiokafka: it
refuses a release dnpfs was not written against, here, before the modules
that subclass aiokafka's classes are imported.
"""

from . import _aiokafka

_aiokafka.check()

from .backend import KafkaBackend  # noqa: E402 - after the check, on purpose

__all__ = ["KafkaBackend"]

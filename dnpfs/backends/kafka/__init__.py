"""Kafka as the store: a pipe is a topic, a reader group a consumer group.

Only ``KafkaBackend`` is public; the asyncio side (``_bridge``, ``_cluster``,
``_member``) is private to this package.  ``wire`` is the record and cursor
format other Kafka clients can follow (docs/wire-format.md); ``config`` reads
the client settings file.  ``_aiokafka`` is the boundary with aiokafka: it
refuses a release dnpfs was not written against, here, before the modules
that subclass aiokafka's classes are imported.
"""

from . import _aiokafka

_aiokafka.check()

from .backend import KafkaBackend  # noqa: E402 - after the check, on purpose

__all__ = ["KafkaBackend"]

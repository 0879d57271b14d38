"""Kafka as the store: a pipe is a topic, a reader group a consumer group.

Only ``KafkaBackend`` is public; the asyncio side (``_bridge``, ``_cluster``,
``_member``) is private to this package.  ``wire`` is the record and cursor
format other Kafka clients can follow (docs/wire-format.md); ``config`` reads
the client settings file.
"""

from .backend import KafkaBackend

__all__ = ["KafkaBackend"]

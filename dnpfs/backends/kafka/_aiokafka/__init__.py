"""The boundary with aiokafka: the releases dnpfs runs on, and every use of
aiokafka's internals, in this package and nowhere else.

dnpfs reaches past aiokafka's public API where that paid (docs/decisions.md:
"fetch responses read in place", "produce requests", "batch checksums in
hardware", "fetch sessions"):

- ``frames``: the fetcher's connections, reading responses into buffers of
  their own;
- ``produce``: produce requests written in pieces, and a cap on their size;
- ``batches``: record batches whose CRC the CPU computes;
- ``fetch_request``: Fetch requests with the fields of a fetch session;
- ``heartbeats``: which heartbeats of a group member the coordinator answered;
- ``versions``: one table of API versions shared by every connection;
- ``share_requests``: the share-group requests (KIP-932) aiokafka lacks, in
  its public protocol classes only (no internals: nothing in ``INTERNALS``).

Internals change without notice, so:

- ``SUPPORTED`` is the range of releases tested (pyproject.toml says the
  same; tests/unit/test_aiokafka_boundary.py holds them together), and
  ``check`` refuses any other release in one line.  The Kafka backend calls
  it before importing anything of this package but this module (on 0.12
  importing them fails; 0.13 lacks ``remaining_linger``);
- ``INTERNALS`` lists every private name these modules use; a release inside
  the range that lacks one is refused the same way, and the unit test fails
  on it, rather than a mount reading wrong data;
- outside this package no module of dnpfs touches a private name of
  aiokafka (the unit test looks).

So this module imports nothing of aiokafka at import time.
"""

from __future__ import annotations

import importlib

from ....errors import StoreError

SUPPORTED = ">=0.14,<0.15"

# (module, attribute path, which module here uses it)
INTERNALS: list[tuple[str, str, str]] = [
    # frames.py: the fetcher's connection reads frames into buffers of its own
    ("aiokafka.conn", "AIOKafkaConnection._create_reader_task", "frames"),
    ("aiokafka.conn", "AIOKafkaConnection._handle_frame", "frames"),
    ("aiokafka.conn", "CloseReason.OUT_OF_SYNC", "frames"),
    ("aiokafka.conn", "CloseReason.CONNECTION_TIMEOUT", "produce"),
    # produce.py: produce requests written in pieces, and their size cap
    ("aiokafka.conn", "AIOKafkaConnection._next_correlation_id", "produce"),
    ("aiokafka.client", "ConnectionGroup", "produce"),
    ("aiokafka.producer.message_accumulator", "MessageAccumulator.drain_by_nodes", "produce"),
    ("aiokafka.producer.message_accumulator", "MessageBatch.remaining_linger", "produce"),
    ("aiokafka.producer.sender", "Sender.sender_task", "produce"),
    # batches.py: batches whose CRC the CPU computes
    ("aiokafka.record.default_records", "_DefaultRecordBatchBuilderPy._write_header", "batches"),
    ("aiokafka.record.default_records", "_DefaultRecordBatchBuilderPy.HEADER_STRUCT", "batches"),
    ("aiokafka.producer.message_accumulator", "BatchBuilder._set_producer_state", "batches"),
    # fetch_request.py: aiokafka's FetchRequest with the session fields filled in
    ("aiokafka.protocol.fetch", "FetchRequest.build", "fetch_request"),
    ("aiokafka.protocol.fetch", "FetchRequest_v11", "fetch_request"),
    # heartbeats.py: a member hears of each answered heartbeat
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator._do_heartbeat", "heartbeats"),
    # versions.py: connections share their table of API versions
    ("aiokafka.conn", "AIOKafkaConnection._do_version_lookup", "versions"),
]

# Instance attributes (set in __init__, so not on the class): checked by the
# unit test on live objects, listed here so that the boundary is one list.
INSTANCE_INTERNALS: list[tuple[str, str, str]] = [
    ("AIOKafkaConnection", "_writer _requests _versions _client_id _request_timeout "
                           "_last_action", "frames, produce, versions"),
    ("AIOKafkaProducer", "_message_accumulator _sender", "batches, produce"),
    ("MessageAccumulator", "_batch_size _compression_type _cluster _batches", "batches, produce"),
    ("MessageBatch", "_builder", "produce"),
]


def version() -> str:
    import aiokafka

    return getattr(aiokafka, "__version__", "?")


def supported(release: str) -> bool:
    from packaging.specifiers import SpecifierSet  # aiokafka's own dependency

    return release in SpecifierSet(SUPPORTED)


def missing() -> list[str]:
    """The names of ``INTERNALS`` this aiokafka lacks."""
    gone = []
    for module, path, _ in INTERNALS:
        try:
            obj = importlib.import_module(module)
            for part in path.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            gone.append(f"{module}.{path}")
    return gone


def check() -> None:
    """Refuse, in one line, an aiokafka dnpfs was not written against."""
    release = version()
    if not supported(release):
        raise StoreError(f"aiokafka {release} is not supported: need {SUPPORTED}")
    gone = missing()
    if gone:
        raise StoreError(f"aiokafka {release} lacks what dnpfs uses: {', '.join(gone)}"
                         f" (dnpfs runs on aiokafka {SUPPORTED})")


def codecs_missing() -> list[str]:
    """The record codecs aiokafka cannot read here (their library is absent)."""
    from aiokafka import codec

    have = {"snappy": codec.has_snappy, "lz4": codec.has_lz4, "zstd": codec.has_zstd}
    return [name for name, has in have.items() if not has()]

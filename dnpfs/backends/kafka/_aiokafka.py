"""The boundary with aiokafka: the releases dnpfs runs on, and every
internal of aiokafka it leans on.

dnpfs reaches past aiokafka's public API where that paid (docs/decisions.md:
"fetch responses read in place", "produce requests", "batch checksums in
hardware", "fetch sessions").  Internals change without notice, so:

- ``SUPPORTED`` is the range of releases tested (pyproject.toml says the
  same; tests/unit/test_aiokafka_boundary.py holds them together), and a
  Kafka mount refuses any other release with one line, before any module
  that subclasses aiokafka's classes is imported (on 0.12 that import
  itself fails; 0.13 lacks ``remaining_linger``);
- ``INTERNALS`` lists every private name dnpfs uses, where it is used; a
  release inside the range that lacks one is refused the same way, and the
  unit test fails on it, rather than a mount reading wrong data.

The modules that use them say so in their docstrings; nothing private of
aiokafka may be used that is not listed here.
"""

from __future__ import annotations

import importlib

from ...errors import StoreError

SUPPORTED = ">=0.14,<0.15"

# (module, attribute path): what dnpfs touches, and which of its modules does.
INTERNALS: list[tuple[str, str, str]] = [
    # _frames.py: the fetcher's connection reads frames into buffers of its own
    ("aiokafka.conn", "AIOKafkaConnection._create_reader_task", "_frames"),
    ("aiokafka.conn", "AIOKafkaConnection._handle_frame", "_frames"),
    ("aiokafka.conn", "CloseReason.OUT_OF_SYNC", "_frames"),
    ("aiokafka.conn", "CloseReason.CONNECTION_TIMEOUT", "_fetcher"),
    # _produce.py: produce requests written in pieces, and their size cap
    ("aiokafka.conn", "AIOKafkaConnection._next_correlation_id", "_produce"),
    ("aiokafka.client", "ConnectionGroup", "_produce"),
    ("aiokafka.producer.message_accumulator", "MessageAccumulator.drain_by_nodes", "_produce"),
    ("aiokafka.producer.message_accumulator", "MessageBatch.remaining_linger", "_produce"),
    # _batches.py: batches whose CRC the CPU computes
    ("aiokafka.record.default_records", "_DefaultRecordBatchBuilderPy._write_header", "_batches"),
    ("aiokafka.record.default_records", "_DefaultRecordBatchBuilderPy.HEADER_STRUCT", "_batches"),
    ("aiokafka.producer.message_accumulator", "BatchBuilder._set_producer_state", "_batches"),
    # _fetcher.py: aiokafka's FetchRequest with the session fields filled in
    ("aiokafka.protocol.fetch", "FetchRequest.build", "_fetcher"),
    ("aiokafka.protocol.fetch", "FetchRequest_v11", "_fetcher"),
]

# Instance attributes (set in __init__, so not on the class): checked by the
# unit test on live objects, listed here so that the boundary is one list.
INSTANCE_INTERNALS: list[tuple[str, str, str]] = [
    ("AIOKafkaConnection", "_writer _requests _versions _client_id _request_timeout "
                           "_last_action", "_frames, _produce"),
    ("AIOKafkaProducer", "_message_accumulator", "_batches, _cluster"),
    ("MessageAccumulator", "_batch_size _compression_type _cluster _batches", "_batches, _produce"),
    ("MessageBatch", "_builder", "_produce"),
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

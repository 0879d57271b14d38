"""The Kafka backend: each pipe is a topic, each reader group a consumer group.

- Pipe NAME is topic ``<topic_prefix>NAME`` with one partition (so records
  keep their order) and the configured replication factor.
- A record is one write() or a session marker; see ``wire`` and
  docs/wire-format.md, which any Kafka client can follow.
- Reader group G of NAME is consumer group ``dnpfs.<topic>@G`` (the default
  group: ``dnpfs.<topic>``), shared by every mount of the cluster.  The first
  reader of a group on a mount makes the mount a member (``attach``); the last
  one to close commits and leaves (``detach``), so the partition moves to a
  mount that still has readers.  The cursor is the committed offset plus
  commit metadata (byte position, open sessions).
- On a broker with share groups (KIP-932, Kafka 4.2 on), the default group
  is a share group instead (``_share``): readers on every mount take records
  at the same time, each record whole to one reader handle, kept until its
  job is done (the ``Holds`` capability).  ``pipe@group`` groups, and every
  group on older brokers, are consumer groups as above.

aiokafka is asyncio-only: it runs on one asyncio loop in one thread owned by
this backend (``_bridge``), and every method here hands its work to that loop
(``_cluster``), but for what it reads of ``_shared``.  Callers see trio
coroutines and dnpfs errors only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from ...errors import DnpfsError, NoSuchPipe, StoreError
from ...model import Cursor, Held, Record
from ..base import Backend, ChangeCallback, Fetched, GroupStats, PipeStats, T
from . import _aiokafka
from ._aiokafka.versions import share_version_tables
from ._bridge import Bridge
from ._cluster import Cluster, describe_error
from ._share import ShareReaders
from .config import ClientConfig

log = logging.getLogger(__name__)

# Kafka's default message.max.bytes is 1048588 (1 MiB + 12): a batch of one
# record carries 61 bytes of batch header, the record framing and the dnpfs
# headers besides the value.  1,000,000 leaves ample room for all of that.
DEFAULT_MAX_RECORD = 1_000_000
RECORD_OVERHEAD = 4096  # batch header, record framing, headers: generously
MAX_REQUEST = 1 << 20
# Records fetched but not yet read, all pipes of a mount together (see
# _fetcher.Fetcher.share): Kafka's consumer bounds a fetch by fetch.max.bytes.
DEFAULT_FETCH_BUDGET = 64 << 20  # the producer's own limit; a record of MAX_RECORD fits

# --share-groups: "auto" (the default) makes a pipe's default group a share
# group where the broker has them (work queues read on every mount at once:
# issue #28); "never" keeps the consumer group, which one mount at a time
# reads, for a user who streams one pipe to one reader at a time
# (docs/kafka.md; docs/decisions.md, "Share groups by default").
SHARE_GROUPS = ("auto", "never")
SHARE_GROUPS_DEFAULT = "auto"

_HOST_PORT = re.compile(r"[A-Za-z0-9.\-]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}")
_PREFIX = re.compile(r"[A-Za-z0-9._-]*")


class KafkaBackend(Backend):
    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "",
        config_file: Path | str | None = None,
        replication_factor: int = 1,
        max_record_size: int = DEFAULT_MAX_RECORD,
        fetch_budget: int = DEFAULT_FETCH_BUDGET,
        share_groups: str = SHARE_GROUPS_DEFAULT,
    ) -> None:
        self.bootstrap = bootstrap.strip()
        self.topic_prefix = topic_prefix
        self.config_file = config_file
        self.replication_factor = replication_factor
        self.max_record_size = max_record_size
        self.fetch_budget = fetch_budget
        self.share_groups = share_groups
        self.description = f"kafka:{self.bootstrap}" + (f"/{topic_prefix}" if topic_prefix else "")
        self._config: ClientConfig | None = None
        self._bridge = Bridge()
        self._cluster: Cluster | None = None
        self._shares: ShareReaders | None = None  # None: the broker has no share groups
        self._closed = False

    # -- lifecycle ---------------------------------------------------------
    def check(self) -> None:
        servers = [s.strip() for s in self.bootstrap.split(",")]
        bad = [s for s in servers if not _HOST_PORT.fullmatch(s)]
        if not self.bootstrap or bad:
            raise StoreError(f"invalid Kafka bootstrap address {bad[0] if bad else ''!r}:"
                             " use HOST:PORT[,HOST:PORT...]")
        if not _PREFIX.fullmatch(self.topic_prefix) or len(self.topic_prefix) > 200:
            raise StoreError(f"invalid topic prefix {self.topic_prefix!r}:"
                             " use at most 200 of [A-Za-z0-9._-]")
        if self.replication_factor < 1:
            raise StoreError("the replication factor must be at least 1")
        if self.fetch_budget < 1 << 20:
            raise StoreError("the fetch budget (--fetch-mib) must be at least 1 MiB")
        if self.share_groups not in SHARE_GROUPS:
            raise StoreError(f"invalid --share-groups {self.share_groups!r}: use"
                             f" {' or '.join(SHARE_GROUPS)}")
        self._config = ClientConfig.load(self.config_file)
        if self.config_file is not None:
            log.info("Kafka client settings from %s: %s", self.config_file, self._config.describe())
            if self._config.bootstrap not in (None, self.bootstrap):
                log.info("%s: bootstrap.servers=%s ignored; connecting to %s", self.config_file,
                         self._config.bootstrap, self.bootstrap)

    async def start(self, nursery: trio.Nursery, on_change: ChangeCallback) -> None:
        self.check()
        _quiet_aiokafka()
        share_version_tables()
        missing = _aiokafka.codecs_missing()
        if missing:
            log.warning("no codec library (cramjam) for %s: records compressed with them "
                        "cannot be read (EIO)", ", ".join(missing))
        self._bridge.start()
        self._cluster = Cluster(
            self.bootstrap,
            self.topic_prefix,
            self._config,
            self.replication_factor,
            max(MAX_REQUEST, self.max_record_size + (64 << 10)),
            fetch_budget=self.fetch_budget,
            notify=lambda name, gone=False: self._bridge.to_trio(on_change, name, gone),
        )
        try:
            await self._call(self._cluster.start)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._bridge.stop()
            raise
        if self.share_groups == "auto":
            shares = ShareReaders(self._cluster, self._cluster.notify)
            try:
                if await self._call(shares.supported):
                    self._shares = shares
            except StoreError as e:
                log.warning("cannot tell whether the broker has share groups (%s): not using"
                            " them", e)
        self.default_group = "share group" if self._shares else "consumer group (%s)" % (
            "--share-groups never" if self.share_groups == "never"
            else "this broker has no share groups")
        log.info("the default group of a pipe is a %s", self.default_group)
        limit = self._cluster.message_max_bytes
        if limit is not None and limit - RECORD_OVERHEAD < self.max_record_size:
            self.max_record_size = max(4096, limit - RECORD_OVERHEAD)
            log.info("the broker takes messages of up to %d bytes: writes are split into"
                     " records of %d", limit, self.max_record_size)
        log.info("connected to Kafka at %s (topic prefix %r)", self.bootstrap, self.topic_prefix)

    async def close(self) -> None:
        if self._cluster is None or self._closed:
            return
        self._closed = True
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(8):
                if self._shares is not None:
                    await self._call(self._shares.close)
                await self._call(self._cluster.close)
        except DnpfsError as e:
            log.warning("closing the Kafka client: %s", e)
        finally:
            with trio.CancelScope(shield=True):
                await self._bridge.stop()

    async def _call(self, fn, *args, shield: bool = False):
        try:
            return await self._bridge.call(fn, *args, shield=shield)
        except DnpfsError:
            raise
        except Exception as e:
            log.debug("Kafka call %s failed", getattr(fn, "__name__", fn), exc_info=True)
            raise StoreError(f"Kafka: {describe_error(e)}") from e

    # -- pipes -------------------------------------------------------------
    async def create_pipe(self, name: str) -> bool:
        return await self._call(self._cluster.create, name)

    async def delete_pipe(self, name: str) -> bool:
        if self._shares is not None:  # its set-aside notes go with it
            self._bridge.loop.call_soon_threadsafe(self._shares.aside.pop, name, None)
        return await self._call(self._cluster.delete, name)

    async def list_pipes(self) -> list[str]:
        return await self._call(self._cluster.list)

    async def pipe_exists(self, name: str) -> bool:
        if name in self._cluster.topics:  # refreshed in the background
            return True
        return await self._call(self._cluster.exists, name)

    # -- records -----------------------------------------------------------
    async def append(self, name: str, records: Sequence[Record], durable: bool = True) -> None:
        # Every append waits for acks=all, so *durable* asks nothing more: an
        # acknowledged record is in every in-sync replica's log.
        if not records:
            return
        too_big = [r for r in records if len(r.data) > self.max_record_size]
        if too_big:
            raise StoreError(f"record of {len(too_big[0].data)} bytes is over the limit of"
                             f" {self.max_record_size}")
        await self._call(self._cluster.append, name, records)

    # -- reader groups -----------------------------------------------------
    async def attach(self, name: str, group: str) -> int:
        if self.holds(name, group):
            if name not in self._cluster.topics and not await self._call(self._cluster.exists,
                                                                          name):
                raise NoSuchPipe(name)
            return await self._call(self._shares.attach, name, shield=True)
        # Shielded: once the mount joined the group, the caller must learn it
        # (and detach later), or the mount would hold the partition for no reader.
        return await self._call(self._cluster.attach, name, group, shield=True)

    async def detach(self, name: str, group: str) -> None:
        if self.holds(name, group):
            return await self._call(self._shares.detach, name, shield=True)
        await self._call(self._cluster.detach, name, group, shield=True)

    async def fetch(self, name: str, group: str, max_bytes: int) -> Fetched:
        if name not in self._cluster.topics and not await self._call(self._cluster.exists, name):
            raise NoSuchPipe(name)
        if self.holds(name, group):
            return Fetched(Cursor(), ())  # a share group's records are acquired, not looked at
        return await self._call(self._cluster.fetch, name, group, max_bytes)

    async def consume(self, name: str, group: str, max_bytes: int,
                      decide: Callable[[Fetched], tuple[Cursor, T]], blocking: bool = False) -> T:
        # A read whose records are buffered crosses no thread: the member
        # decides and moves its cursor under its lock, here in the trio thread.
        # So does a blocking read that finds nothing buffered: it waits for
        # the member to buffer records (or to get the partition) anyway.
        # Otherwise one trip to the asyncio thread: *decide* is pure, so it
        # runs there, between the fetch and the commit, with no other reader
        # between.
        while True:
            if name not in self._cluster.topics and not await self._call(self._cluster.exists,
                                                                          name):
                raise NoSuchPipe(name)
            await trio.lowlevel.checkpoint_if_cancelled()  # not once the cursor moved
            done = self._cluster.try_consume(name, group, max_bytes, decide, blocking)
            if done is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return done[0]
            done = await self._call(self._cluster.consume, name, group, max_bytes, decide,
                                    shield=True)
            if done is not None:
                return done[0]

    async def cursor(self, name: str, group: str) -> Cursor:
        if self.holds(name, group):
            # No cursor: the sessions open are the ledger's (_ledger), for leases.
            return Cursor(0, 0, await self._call(self._shares.sessions, name))
        # The member's cursor, read in this thread: ``fetch`` would also ask
        # the broker for the end of the log when nothing is buffered (a
        # ListOffsets per waiting group and lease round: 10-20 requests/s
        # of nothing with 200 groups).
        cursor = self._cluster.peek_cursor(name, group)
        return cursor if cursor is not None else await super().cursor(name, group)

    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        return await self._call(self._cluster.commit, name, group, expected, new, shield=True)

    async def delete_group(self, name: str, group: str) -> bool:
        if not await self.pipe_exists(name):
            raise NoSuchPipe(name)  # the contract's answer (base.py), as SQLite's
        return await self._call(self._cluster.delete_group, name, group)

    # -- capabilities: Holds (work queues, where share groups read) -------------
    def holds(self, name: str, group: str) -> bool:
        return self._shares is not None and group == ""

    async def consume_held(self, holder: object, name: str, group: str, max_bytes: int,
                           decide: Callable[[Fetched], tuple[Cursor, T]],
                           blocking: bool = False) -> T:
        if not self.holds(name, group):
            return await self.consume(name, group, max_bytes, decide, blocking)
        if name not in self._cluster.topics and not await self._call(self._cluster.exists, name):
            raise NoSuchPipe(name)
        # Records acquired here for the handle cross no thread: the share
        # reader decides under its lock, here in the trio thread (_share).
        await trio.lowlevel.checkpoint_if_cancelled()  # not once records are taken
        done = self._shares.try_take(name, holder, max_bytes, decide)
        if done is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return done[0]
        # Shielded: a record handed to the handle must reach it (or be settled).
        return await self._call(self._shares.take, name, holder, max_bytes, decide, blocking,
                                shield=True)

    def settle(self, holder: object) -> None:
        if self._shares is not None and not self._closed:
            self._shares.settle(holder)  # under the share reader's lock, in this thread

    async def give_back(self, name: str, group: str, holder: object,
                        since: tuple[int, int] | None) -> None:
        # *since* aside: Kafka acknowledges whole records, so a record a
        # handle closed part way through goes back whole (docs/semantics.md).
        if self.holds(name, group):
            await self._call(self._shares.give_back, holder, shield=True)

    async def given_back(self, name: str, group: str) -> bool:
        # For poll(): a share group's records are not looked at but acquired;
        # one acquired here for the poller is kept for this mount's next read.
        reader = self._shares.readers.get(name) if self.holds(name, group) else None
        return reader is not None and await self._call(self._shares_peek, reader)

    @staticmethod
    async def _shares_peek(reader) -> bool:
        return reader.peek()

    async def set_aside(self, name: str, group: str) -> list[Held]:
        return list(self._shares.aside.get(name, ())) if self.holds(name, group) else []

    async def stats(self, name: str) -> PipeStats:
        if not await self.pipe_exists(name):
            raise NoSuchPipe(name)
        if self._shares is None:
            return PipeStats()
        reader = self._shares.readers.get(name)
        aside = self._shares.aside.get(name)
        if reader is None and aside is None:
            return PipeStats()
        return PipeStats(groups={"": GroupStats(None, None,
                                                reader.redelivered() if reader else 0,
                                                len(aside or ()))})

    # -- capabilities: Liveness (session leases) and Membership ---------------

    async def heartbeat(self, mount_id: str) -> None:
        await self._call(self._cluster.liveness.beat, mount_id)

    async def mount_ages(self) -> dict[str, float]:
        return await self._call(self._cluster.liveness.ages)

    def membership(self, name: str, group: str) -> str | None:
        if self.holds(name, group):  # every mount reads: `dnpfs status` says how
            return "share group" if name in self._shares.readers else None
        return self._cluster.membership(name, group) if self._cluster is not None else None

    async def health(self) -> str:
        """"ok", or why the cluster's metadata cannot be read right now."""
        return self._cluster.health if self._cluster is not None else "not started"


def _quiet_aiokafka() -> None:
    """aiokafka logs every join and leave at INFO: keep the daemon's log for
    dnpfs unless someone asked for aiokafka's messages."""
    logger = logging.getLogger("aiokafka")
    if logger.level == logging.NOTSET and logging.getLogger().level > logging.DEBUG:
        logger.setLevel(logging.WARNING)

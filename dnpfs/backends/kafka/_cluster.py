"""Everything one mount does with Kafka, on the bridge's asyncio loop: the
parts, made and wired here, and nothing else.

    KafkaBackend (trio) --Bridge--> Cluster: starts, wires and stops
      Catalog   which pipes exist, who leads them; create, delete, log ends
      Appender  the producer: writes
      Groups    one GroupMember per reader group with readers here
                  each member: MemberContext (Fetcher + callables)
      Fetcher   fetches every partition the members hold (Catalog: leaders)
      Liveness  mount heartbeats, for session leases
    trio reads  Shared: the published MountView and each MemberState

Callers go down the list, never up: a part learns of another's news through a
callable it was given (``Catalog.on_gone``, ``MemberContext.notify``).  What
the trio thread reads is in ``_shared``; everything else here is the loop's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from ...errors import StoreError
from ...model import Cursor, Record
from ..base import Fetched
from ._appender import Appender
from ._catalog import Catalog, Names
from ._errors import describe_error
from ._fetcher import Fetcher
from ._groups import Groups
from ._liveness import Liveness
from ._shared import Shared
from .config import ClientConfig

__all__ = ["Cluster", "describe_error"]

log = logging.getLogger(__name__)

CLIENT_ID = "dnpfs"
CONNECT_TIMEOUT = 12.0
CONTROL_TIMEOUT_MS = 15_000


class _ConnectErrors(logging.Handler):
    """aiokafka says why a connection failed only in its log ("Unable connect
    to ...: REASON") and raises a bare "Unable to bootstrap": keep the reason."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Unable connect to"):
            reason = text.partition('": ')[2] or text
            errno = re.match(r"\[Errno (\d+)\]", reason)
            self.last = os.strerror(int(errno.group(1))) if errno else reason


class Cluster:
    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        config: ClientConfig,
        replication_factor: int,
        max_request_size: int,
        fetch_budget: int,
        notify: Callable[..., None],  # (name, gone=False): see base.ChangeCallback
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.config = config
        self.replication_factor = replication_factor
        self.max_request_size = max_request_size
        self.fetch_budget = fetch_budget
        self.notify = notify
        self.names = Names(prefix)
        self.shared = Shared()  # what the trio thread reads
        self._kwargs: dict[str, Any] = {}
        self.client: AIOKafkaClient | None = None
        self.admin: AIOKafkaAdminClient | None = None
        self.message_max_bytes: int | None = None
        # The parts, made by ``start``.
        self.catalog: Catalog | None = None
        self.fetcher: Fetcher | None = None
        self.appender: Appender | None = None
        self.groups: Groups | None = None
        self.liveness: Liveness | None = None

    def topic(self, name: str) -> str:
        return self.names.topic(name)

    def consumer_kwargs(self) -> dict[str, Any]:
        """Connection settings for another client of this mount."""
        return dict(bootstrap_servers=self.bootstrap, client_id=CLIENT_ID, **self._kwargs)

    # -- what the trio thread reads (see _shared) ---------------------------------------
    @property
    def topics(self) -> frozenset[str]:
        return self.shared.view.topics

    @property
    def health(self) -> str:
        return self.shared.view.health

    @property
    def producer(self):
        return self.appender.producer

    # -- life ------------------------------------------------------------------
    async def start(self) -> None:
        self._kwargs = self.config.client_kwargs()
        common = self.consumer_kwargs()
        # Metadata and admin requests answer a syscall (lookup, mkfifo, rm):
        # fail within seconds rather than aiokafka's default 40.
        self.client = AIOKafkaClient(**common, request_timeout_ms=CONTROL_TIMEOUT_MS)
        self.admin = AIOKafkaAdminClient(**common, request_timeout_ms=CONTROL_TIMEOUT_MS)
        self.catalog = Catalog(self.names, self.client, self.admin, self.shared,
                               bootstrap=self.bootstrap,
                               replication_factor=self.replication_factor,
                               notify=self.notify, on_gone=self._pipe_gone,
                               on_leaders_moved=self._leaders_moved)
        self.fetcher = Fetcher(self.catalog, self.fetch_budget, self.config.check_crcs)
        self.groups = Groups(self.catalog, self.fetcher, self.shared, self.client, self.admin,
                             self.consumer_kwargs, self.notify)
        capture = _ConnectErrors()
        logging.getLogger("aiokafka").addHandler(capture)
        # What the start waits for, named when it does not come in time: a
        # broker that accepts connections but does not answer its metadata
        # is another fault than one whose producer cannot start.
        step = "the cluster's metadata"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await self.client.bootstrap()
                step = "the admin client's start"
                await self.admin.start()
                step = "the broker's message.max.bytes"
                self.message_max_bytes = await self._message_max_bytes()
                self.appender = Appender(self.catalog, self.consumer_kwargs,
                                         message_max_bytes=self.message_max_bytes,
                                         max_request_size=self.max_request_size)
                step = "the producer's start"
                await self.appender.start()
                step = "the fetch client's start"
                await self.fetcher.start(**common)
                step = "the list of topics"
                await self.catalog.refresh()
        except (TimeoutError, KafkaError, OSError, StoreError) as e:
            await self._stop_clients()
            if isinstance(e, TimeoutError):
                reason = f"no answer within {CONNECT_TIMEOUT:.0f} s (waiting for {step}"
                reason += f"; last connection error: {capture.last})" if capture.last else ")"
            elif isinstance(e, KafkaConnectionError):
                reason = capture.last or await self._why_unreachable()
            else:
                reason = describe_error(e)
            raise StoreError(f"cannot reach Kafka at {self.bootstrap}: {reason}") from None
        finally:
            logging.getLogger("aiokafka").removeHandler(capture)
        self.catalog.start()
        self.liveness = Liveness(self.prefix, self.admin, self.replication_factor,
                                 self.consumer_kwargs, lambda: self.appender.producer)
        try:
            await self.liveness.start()
        except Exception as e:  # noqa: BLE001 - leases are a nicety; pipes work without
            log.warning("session leases are off: %s", describe_error(e))

    def _pipe_gone(self, name: str) -> None:
        """The pipe was deleted (here or elsewhere): drop what this mount holds for it."""
        if self.appender is not None:
            self.appender.forget(self.names.topic(name))
        self.groups.pipe_gone(name)

    def _leaders_moved(self) -> None:
        self.fetcher.wake()

    async def _message_max_bytes(self) -> int | None:
        """The broker's message.max.bytes (new topics inherit it), if it says."""
        node = self.client.get_random_node()
        try:
            [response] = await asyncio.wait_for(self.admin.describe_configs(
                [ConfigResource(ConfigResourceType.BROKER, str(node), {"message.max.bytes": None})]),
                5)
            for resource in response.to_object()["resources"]:
                for entry in resource["config_entries"]:
                    if entry["config_names"] == "message.max.bytes":
                        return int(entry["config_value"])
        except Exception as e:  # noqa: BLE001 - not allowed to look (ACLs): keep the default
            log.info("cannot read the broker's message.max.bytes: %s", describe_error(e))
        return None

    async def _why_unreachable(self) -> str:
        """aiokafka only says "Unable to bootstrap"; find the socket-level reason."""
        reasons = []
        for server in self.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host.strip("[]"), int(port)), 3)
                writer.close()
            except TimeoutError:
                reasons.append(f"{server}: no answer")
            except OSError as e:
                reasons.append(f"{server}: {os.strerror(e.errno) if e.errno else e}")
            else:
                reasons.append(f"{server}: connected, but the Kafka handshake failed"
                               " (wrong port, or TLS/SASL settings?)")
        return "; ".join(reasons) if len(reasons) > 1 else reasons[0].partition(": ")[2]

    async def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()
        if self.liveness is not None:
            await self.liveness.close()
        if self.groups is not None:
            await self.groups.close()
        if self.appender is not None:
            try:
                await asyncio.wait_for(self.appender.flush(), 5)
            except Exception as e:  # noqa: BLE001
                log.warning("flushing the producer: %s", describe_error(e))
        await self._stop_clients()

    async def _stop_clients(self) -> None:
        for closer in (
            self.appender and self.appender.close,
            self.fetcher and self.fetcher.close,
            self.admin and self.admin.close,
            self.client and self.client.close,
        ):
            if closer is None:
                continue
            try:
                await asyncio.wait_for(closer(), 5)
            except Exception as e:  # noqa: BLE001 - closing is best effort
                log.debug("closing a Kafka client: %s", e)

    # -- what KafkaBackend calls (on the loop, but for the trio-thread reads) ---------
    async def create(self, name: str) -> bool:
        return await self.catalog.create(name)

    async def delete(self, name: str) -> bool:
        return await self.catalog.delete(name)

    async def list(self) -> list[str]:
        return await self.catalog.list()

    async def exists(self, name: str) -> bool:
        return await self.catalog.exists(name)

    async def append(self, name: str, records: Sequence[Record]) -> None:
        await self.appender.append(name, records)

    async def attach(self, name: str, group: str) -> int:
        return await self.groups.attach(name, group)

    async def detach(self, name: str, group: str) -> None:
        await self.groups.detach(name, group)

    async def fetch(self, name: str, group: str, max_bytes: int) -> Fetched:
        return await self.groups.fetch(name, group, max_bytes)

    async def consume(self, name: str, group: str, max_bytes: int, decide):
        return await self.groups.consume(name, group, max_bytes, decide)

    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        return await self.groups.commit(name, group, expected, new)

    async def delete_group(self, name: str, group: str) -> bool:
        return await self.groups.delete_group(name, group)

    def try_consume(self, name: str, group: str, max_bytes: int, decide, blocking: bool = False):
        """From the trio thread: see ``Groups.try_consume``."""
        if self.groups is None:
            return None
        return self.groups.try_consume(name, group, max_bytes, decide, blocking)

    def peek_cursor(self, name: str, group: str) -> Cursor | None:
        """From the trio thread: see ``Groups.peek_cursor``."""
        return None if self.groups is None else self.groups.peek_cursor(name, group)

    def membership(self, name: str, group: str) -> str | None:
        """From the trio thread: see ``Backend.membership``."""
        return None if self.groups is None else self.groups.membership(name, group)

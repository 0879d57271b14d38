"""The reader groups this mount takes part in: one ``GroupMember`` per group
with readers open here, on the bridge's asyncio loop.

A member is made at the first ``attach`` (or a fetch that finds none: its
group was detached by a racing close) and closed at ``detach``, or when its
pipe is deleted.  Each gets a ``MemberContext``: the fetcher and a few
callables, never this registry or the mount.  The trio thread reads a
member's ``MemberState`` through ``Shared.member`` only (``try_consume``,
``peek_cursor``, ``membership``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from ...errors import Busy, NoSuchPipe, StoreError
from ...model import Cursor
from ..base import Fetched
from ._catalog import Catalog
from ._fetcher import Fetcher
from ._member import GroupMember, MemberContext, group_id
from ._protocol import DeleteGroupsRequest
from ._shared import Shared

# Kafka error codes answered specially.
NON_EMPTY_GROUP = 68
GROUP_NOT_FOUND = 69


class Groups:
    def __init__(self, catalog: Catalog, fetcher: Fetcher, shared: Shared,
                 client: AIOKafkaClient, admin: AIOKafkaAdminClient,
                 client_kwargs: Callable[[], dict[str, Any]],
                 notify: Callable[..., None]) -> None:
        self.catalog = catalog
        self.shared = shared
        self.client = client
        self.admin = admin
        self.notify = notify
        self._members: dict[tuple[str, str], GroupMember] = {}
        self._closing: set[asyncio.Task] = set()
        self.context = MemberContext(
            fetcher=fetcher,
            consumer_kwargs=client_kwargs,
            pipe_exists=lambda name: name in catalog.topics,
            committed=self.committed,
            end_offset=catalog.end_offset,
            held_groups=self.held_groups,
            notify=notify,
            drop=self._drop,
        )

    async def close(self) -> None:
        members = list(self._members.values())
        for (name, group), member in self._members.items():
            self.shared.remove_member(name, group, member.state)
        self._members.clear()
        await asyncio.gather(*(m.close() for m in members), *self._closing,
                             return_exceptions=True)

    def pipe_gone(self, name: str) -> None:
        for key in [k for k in self._members if k[0] == name]:
            self._close_member(key)

    # -- members ---------------------------------------------------------------------
    def _member(self, name: str, group: str) -> GroupMember:
        member = self._members.get((name, group))
        if member is None:
            member = GroupMember(self.context, name, self.catalog.names.topic(name), group)
            self._members[(name, group)] = member
            self.shared.add_member(name, group, member.state)
            member.start()
        return member

    def _close_member(self, key: tuple[str, str]) -> asyncio.Task | None:
        member = self._members.pop(key, None)
        if member is None:
            return None
        self.shared.remove_member(*key, member.state)
        task = asyncio.create_task(member.close(), name=f"close {member.group_id}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    def _drop(self, member: GroupMember) -> None:
        if self._members.get((member.name, member.group)) is member:
            self._close_member((member.name, member.group))

    def held_groups(self) -> int:
        """How many reader groups this mount reads now (it holds their partition)."""
        return sum(member.held for member in self._members.values())

    # -- what the backend calls on the loop -------------------------------------------
    async def attach(self, name: str, group: str) -> int:
        if not await self.catalog.known(name):
            raise NoSuchPipe(name)
        horizon = await self.catalog.end_offset(name)
        self._member(name, group)  # joins in the background
        return horizon

    async def detach(self, name: str, group: str) -> None:
        task = self._close_member((name, group))
        if task is None:
            return
        # A reader of the group whose open raced with this close (its attach
        # found the member just closed) must not wait for a member that no
        # longer exists: wake it, its next fetch joins the group again.
        self.notify(name)
        await asyncio.shield(task)

    async def fetch(self, name: str, group: str, max_bytes: int) -> Fetched:
        # A reader whose group was detached by a racing close gets a member again.
        return await self._member(name, group).fetch(max_bytes)

    async def consume(self, name: str, group: str, max_bytes: int, decide):
        return await self._member(name, group).consume(max_bytes, decide)

    async def commit(self, name: str, group: str, expected: Cursor, new: Cursor) -> bool:
        member = self._members.get((name, group))
        return member is not None and await member.commit(expected, new)

    async def committed(self, group_id: str, tp: TopicPartition) -> OffsetAndMetadata:
        offsets = await self.admin.list_consumer_group_offsets(group_id, partitions=[tp])
        return offsets.get(tp) or OffsetAndMetadata(-1, "")

    async def delete_group(self, name: str, group: str) -> bool:
        gid = group_id(self.catalog.names.topic(name), group)
        coordinator = await self.admin.find_coordinator(gid)
        response = await self.client.send(coordinator, DeleteGroupsRequest([gid]))
        [(_, code)] = response.results
        if code == GROUP_NOT_FOUND:
            return False
        if code == NON_EMPTY_GROUP:
            raise Busy(f"reader group {group!r} of {name} has readers open")
        if code:
            raise StoreError(f"cannot delete reader group {group!r} of {name}:"
                             f" {for_code(code).__name__}")
        return True

    # -- what the trio thread calls ------------------------------------------------------
    def try_consume(self, name: str, group: str, max_bytes: int, decide, blocking: bool = False):
        """``consume`` from what is buffered, or None (see
        ``GroupMember.try_consume``).  Never creates a member."""
        state = self.shared.member(name, group)
        if state is None:
            return None
        done = state.try_consume(max_bytes, decide, blocking)
        if done is None:
            return None
        result, tell_loop = done
        if tell_loop:
            state.tell_loop()
        return result

    def peek_cursor(self, name: str, group: str) -> Cursor | None:
        """The cursor of this mount's member of the group if it holds the
        partition, else None.  Never creates a member."""
        state = self.shared.member(name, group)
        return None if state is None else state.held_cursor()

    def membership(self, name: str, group: str) -> str | None:
        """See ``Backend.membership``."""
        state = self.shared.member(name, group)
        return None if state is None else state.membership()

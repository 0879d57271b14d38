"""Session leases: a writer's mount that goes silent must not leave readers
waiting forever.

Every mount sends a heartbeat to the store every ``timeout / 6`` seconds.
Writer session ids start with their mount's id.  A mount whose readers wait
on a pipe looks, every ``timeout / 4`` seconds, at the sessions the reader
group still has open: those of a mount silent for longer than ``timeout``
(killed with -9, its host gone, its network cut) are ended by appending their
END marker on the dead writer's behalf, so readers get their EOF as if the
writer had closed.  Duplicates of such an END (several mounts noticing) have
no effect (delivery.py).  Sessions without a mount id (kcat, other clients)
never expire, and nothing expires on a backend that cannot tell which mounts
are alive (one without the ``Liveness`` capability, backends/base.py).
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import trio

from .backends.base import Liveness
from .errors import DnpfsError
from .model import Kind, Record

if TYPE_CHECKING:
    from .pipes import Pipes

log = logging.getLogger(__name__)


def new_mount_id() -> str:
    return secrets.token_hex(4)


def mount_of(session: str | None) -> str | None:
    mount, dot, _ = (session or "").partition(".")
    return mount if dot else None


class Leases:
    def __init__(self, pipes: Pipes, mount_id: str, timeout: float) -> None:
        self.pipes = pipes
        self.mount_id = mount_id
        self.timeout = timeout
        self._ended: set[str] = set()
        self._started = 0.0  # set in run()

    async def run(self) -> None:
        self._started = trio.current_time()
        if not isinstance(self.pipes.backend, Liveness):
            return  # nothing to beat on, and no way to tell a silent mount
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._beat)
            nursery.start_soon(self._expire_loop)

    async def _beat(self) -> None:
        while not self.pipes.closing:  # the store closes during shutdown
            try:
                await self.pipes.backend.heartbeat(self.mount_id)
            except DnpfsError as e:
                log.warning("heartbeat: %s", e)
            await trio.sleep(self.timeout / 6)

    async def _expire_loop(self) -> None:
        while not self.pipes.closing:
            await trio.sleep(self.timeout / 4)
            try:
                await self.expire()
            except Exception as e:  # noqa: BLE001 - never stop the loop
                log.warning("session expiry: %s", e)

    async def expire(self) -> None:
        waiting = self.pipes.waiting_groups()
        if not waiting:
            return
        ages = await self.pipes.backend.mount_ages()
        uptime = trio.current_time() - self._started
        for name, group in waiting:
            cursor = await self.pipes.backend.cursor(name, group)
            dead = []
            for session in cursor.open_sessions - self._ended:
                mount = mount_of(session)
                if mount is None or mount == self.mount_id:
                    continue
                if ages.get(mount, uptime) > self.timeout:
                    dead.append(session)
            if dead:
                log.warning("pipe %s: ending %d session(s) of silent mount(s): %s",
                            name, len(dead), ", ".join(sorted(dead)))
                await self.pipes.backend.append(name, [Record(Kind.END, s) for s in dead],
                                                durable=False)
                self._ended.update(dead)

"""The contract tier: one suite (test_store.py), run against every store.

``opener`` is parametrized over the stores: memory (always), sqlite and kafka
(narrowed by DNPFS_TEST_BACKENDS, as the semantics tier is; kafka is marked
``kafka`` and uses the dev broker).  ``await opener()`` starts one more
backend on the same store, which stands for one more mount; every backend
is closed when the test's trio run ends.  No FUSE, no mount, no root.
"""

from __future__ import annotations

import os
import uuid
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from dnpfs.backends.memory import MemoryBackend, MemoryStore

BACKENDS = [b for b in os.environ.get("DNPFS_TEST_BACKENDS", "sqlite,kafka").split(",") if b]
STORES = ["memory"] + [pytest.param(b, marks=pytest.mark.kafka) if b == "kafka" else b
                       for b in ("sqlite", "kafka") if b in BACKENDS]


class Changes:
    """A ChangeCallback that remembers every call and lets a test wait for one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, bool]] = []
        self._event = trio.Event()

    def __call__(self, name: str | None, gone: bool = False) -> None:
        self.calls.append((name, gone))
        self._event.set()
        self._event = trio.Event()

    def mark(self) -> int:
        return len(self.calls)

    async def wait_for(self, name: str, since: int = 0, gone: bool | None = None,
                       timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not any(n in (name, None) and (gone is None or g == gone)
                          for n, g in self.calls[since:]):
                await self._event.wait()


@pytest.fixture(params=STORES)
def store_kind(request) -> str:
    return request.param


@pytest.fixture
def make_backend(store_kind, tmp_path, request):
    """make_backend() -> a new, not yet started backend of this test's store."""
    if store_kind == "memory":
        shared = MemoryStore()
        return lambda **kw: MemoryBackend(shared, **kw)
    if store_kind == "sqlite":
        from dnpfs.backends.sqlite import SqliteBackend

        path = tmp_path / "store" / "dnpfs.sqlite"
        return lambda **kw: SqliteBackend(path, **kw)
    from dnpfs.backends.kafka import KafkaBackend

    bootstrap = request.getfixturevalue("kafka_bootstrap")
    prefix = f"ct{uuid.uuid4().hex[:8]}."
    return lambda **kw: KafkaBackend(bootstrap, topic_prefix=prefix, **kw)


@pytest.fixture
def run_store(make_backend):
    """run_store(body, timeout=60): trio.run(body(opener)); opener(**kw) starts
    a backend (a mount) and returns (backend, changes)."""

    def run(body, timeout: float = 60.0):
        async def main():
            async with AsyncExitStack() as stack:
                nursery = await stack.enter_async_context(trio.open_nursery())
                stack.callback(nursery.cancel_scope.cancel)

                async def opener(**kw):
                    backend = make_backend(**kw)
                    changes = Changes()
                    await backend.start(nursery, changes)
                    stack.push_async_callback(_close, backend)
                    return backend, changes

                with trio.fail_after(timeout):
                    return await body(opener)

        return trio.run(main)

    return run


async def _close(backend) -> None:
    with trio.CancelScope(shield=True):
        await backend.close()

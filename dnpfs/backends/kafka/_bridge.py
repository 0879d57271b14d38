"""The asyncio thread aiokafka lives in, and how trio reaches it.

aiokafka is asyncio-only and dnpfs runs under trio.  The Kafka backend owns
one asyncio event loop in one thread, started by ``Bridge.start`` and stopped
by ``Bridge.stop``.  Every aiokafka object is created, used and closed on that
loop only.

- trio -> asyncio: ``await bridge.call(async_fn, *args)`` schedules the
  coroutine with ``run_coroutine_threadsafe``; its completion wakes the trio
  task through the trio token.  No trio worker thread waits meanwhile.
- asyncio -> trio: ``bridge.to_trio(fn, *args)`` queues a synchronous call
  on the trio loop (``TrioToken.run_sync_soon``); it never blocks asyncio.

Nothing outside this package knows that asyncio exists.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ...errors import StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Bridge:
    def __init__(self, name: str = "dnpfs-kafka") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._closed = False
        # Calls not finished yet: stop() fails those the stopped loop never ran,
        # or a (shielded) caller would wait for them forever.
        self._pending: set[concurrent.futures.Future] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "bridge not started"
        return self._loop

    def start(self) -> None:
        """Start the asyncio thread.  Call from the trio thread."""
        self._token = trio.lowlevel.current_trio_token()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name=self.name,
                                        daemon=True)
        self._thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        started.set()
        try:
            loop.run_forever()
            # Stopped: cancel what is left (nothing, after a clean close).
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=2))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception:  # noqa: BLE001 - a dying thread must say why
            log.exception("asyncio thread failed")
        finally:
            loop.close()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, shield: bool = False) -> T:
        """Run ``fn(*args)`` on the asyncio loop and return its result.

        Cancelling the trio task cancels the coroutine, unless *shield*: then
        the call runs to completion first (for short calls whose effect the
        caller must know, such as a cursor commit).
        """
        if self._closed or self._loop is None:
            raise StoreError("the Kafka client is closed")
        token = self._token
        done = trio.Event()

        def wake(_: concurrent.futures.Future) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        future = asyncio.run_coroutine_threadsafe(fn(*args), self._loop)
        self._pending.add(future)
        future.add_done_callback(wake)
        future.add_done_callback(self._pending.discard)
        try:
            with trio.CancelScope(shield=shield):
                await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise StoreError("the Kafka client is closed") from None

    def to_trio(self, fn: Callable[..., object], *args: Any) -> None:
        """From the asyncio thread: run ``fn(*args)`` in the trio thread soon."""
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and join the thread.  Pending calls end with StoreError."""
        if self._closed or self._loop is None:
            return
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        thread = self._thread
        with trio.move_on_after(timeout):
            await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
        if thread.is_alive():
            log.warning("the Kafka thread did not stop within %.0f s", timeout)
        # A call whose task the loop never ran (scheduled just before it
        # stopped) or left pending when it closed has a future nobody will
        # complete: its caller gets StoreError instead of waiting forever.
        for future in list(self._pending):
            try:
                future.set_exception(StoreError("the Kafka client is closed"))
            except concurrent.futures.InvalidStateError:
                pass  # it finished meanwhile

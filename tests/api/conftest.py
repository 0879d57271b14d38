"""The API tier: the filesystem and pipe layers driven directly, without FUSE.

As S3QL's t3_fs_api: ``Filesystem`` handler methods are called inside trio
with the arguments pyfuse3 would pass (a stand-in RequestContext: the
handlers read only its pid), over a real store: the in-memory reference and
SQLite, each standing in for a mount.  No /dev/fuse, no mount, no root; the
real-mount tests (tests/fs, tests/semantics) stay beside these.
"""

from __future__ import annotations

import errno
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pyfuse3
import pytest
import trio

from dnpfs.backends.memory import MemoryBackend, MemoryStore
from dnpfs.fs import Filesystem
from dnpfs.pipes import Pipes


@dataclass
class Ctx:
    """What pyfuse3's RequestContext carries (it cannot be made outside a request)."""

    pid: int = os.getpid()
    uid: int = os.getuid()
    gid: int = os.getgid()
    umask: int = 0o022


CTX = Ctx()


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request, tmp_path):
    """make_store() -> a new backend (one mount) of this test's one store."""
    if request.param == "memory":
        shared = MemoryStore()
        return lambda: MemoryBackend(shared)
    from dnpfs.backends.sqlite import SqliteBackend

    return lambda: SqliteBackend(tmp_path / "store" / "dnpfs.sqlite")


@pytest.fixture
def run_fs(make_store):
    """run_fs(body, mounts=1): trio.run(body(*filesystems)), each a Filesystem
    over its own Pipes and backend of the one store, shut down afterwards."""

    def run(body, mounts: int = 1, timeout: float = 30.0, session_timeout: float = 5.0):
        async def main():
            async with AsyncExitStack() as stack:
                nursery = await stack.enter_async_context(trio.open_nursery())
                stack.callback(nursery.cancel_scope.cancel)
                filesystems = []
                for _ in range(mounts):
                    pipes = Pipes(make_store(), delivery_timeout=10,
                                  session_timeout=session_timeout)
                    await nursery.start(pipes.run)
                    stack.push_async_callback(_shutdown, pipes)
                    fs = Filesystem(pipes)
                    fs.read_lock_owner = lambda: 1  # read() by a process, as the kernel says
                    filesystems.append(fs)
                with trio.fail_after(timeout):
                    return await body(*filesystems)

        return trio.run(main)

    return run


async def _shutdown(pipes: Pipes) -> None:
    with trio.CancelScope(shield=True):
        await pipes.shutdown(5)


async def fails(code: int, call) -> None:
    """Await *call*; it must fail with FUSEError(code)."""
    with pytest.raises(pyfuse3.FUSEError) as info:
        await call
    assert info.value.errno == code, errno.errorcode.get(info.value.errno)

"""The FUSE ceiling: a pyfuse3 filesystem that stores nothing.

    python -m benchmarks.nullfs MOUNTPOINT

Mounted like dnpfs (pyfuse3 under trio, the same options, direct I/O,
non-seekable files with st_blksize 1 MiB), but write() only returns its
length and read() returns bytes from one preallocated buffer.  So `dd` into
``MOUNTPOINT/sink`` and `cat MOUNTPOINT/source-N` (N bytes, then EOF) measure
what any Python FUSE daemon on this machine can do at most: the request rate
of the kernel, libfuse, pyfuse3 and trio, with no pipe semantics and no store.
Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import stat
import sys

import pyfuse3
import trio

SINK = 2
BUFFER = bytes(1 << 20)


class NullFS(pyfuse3.Operations):
    def __init__(self) -> None:
        super().__init__()
        self._sources: dict[int, int] = {}  # inode -> size, for source-N
        self._inos = itertools.count(SINK + 1)
        self._left: dict[int, int] = {}  # fh -> bytes still to read
        self._fhs = itertools.count(1)

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = (stat.S_IFDIR | 0o755) if ino == pyfuse3.ROOT_INODE else (stat.S_IFREG | 0o666)
        a.st_nlink = 1
        a.st_blksize = 1 << 20
        a.entry_timeout = a.attr_timeout = 60
        return a

    async def lookup(self, parent_inode, name, ctx):
        text = name.decode()
        if text == "sink":
            return self._attr(SINK)
        if text.startswith("source-") and text[7:].isdigit():
            ino = next(self._inos)
            self._sources[ino] = int(text[7:])
            return self._attr(ino)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def getattr(self, inode, ctx):
        return self._attr(inode)

    async def setattr(self, inode, attr, fields, fh, ctx):
        return self._attr(inode)  # O_TRUNC

    async def open(self, inode, flags, ctx):
        fh = next(self._fhs)
        self._left[fh] = self._sources.get(inode, 0)
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False, nonseekable=True)

    async def read(self, fh, off, size):
        n = min(size, self._left[fh], len(BUFFER))
        self._left[fh] -= n
        return BUFFER if n == len(BUFFER) else BUFFER[:n]

    async def write(self, fh, off, buf):
        return len(buf)

    async def flush(self, fh):
        pass

    async def release(self, fh):
        self._left.pop(fh, None)


def main() -> None:
    mountpoint = sys.argv[1]
    options = set(pyfuse3.default_options) | {"fsname=dnpfs-bench-null", "subtype=nullfs"}
    pyfuse3.init(NullFS(), mountpoint, options)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            async def stop_on_signal() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        pyfuse3.terminate()
                        return

            nursery.start_soon(stop_on_signal)
            await pyfuse3.main(min_tasks=4, max_tasks=1000)
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    finally:
        pyfuse3.close(unmount=True)
    os._exit(0)


if __name__ == "__main__":
    main()

"""The filesystem: inodes, handles and syscalls.  Nothing here knows how
records are stored; every pipe operation goes through ``pipes.Pipes``.

The FIFO trap: a node reported as S_IFIFO is served by the kernel's own pipe
code, and its opens, reads and writes never reach us.  So pipes are reported
as regular, non-seekable, direct-I/O files.  Only the reply to mknod(S_IFIFO)
says S_IFIFO (the kernel insists, or mkfifo fails with EIO); it names a
throw-away node id with zero cache time, so the next lookup switches the
name over to the real, regular-file node.

Tools that take a pipe for a regular file: what a pipe answers in stat and
lseek is decided here, for GNU head and tail (see ``SEEKING_TOOLS`` and
``Filesystem._size_for``; docs/semantics.md lists each tool), on a node of
their own (dnpfs/nodes.py says why).

The page-cache trap: the kernel serves splice(2) and sendfile(2) of a
direct-I/O file from its page cache, filled by reads that no process asked
for, and only below the file's size.  A size of 0 made them end at once
(busybox `cat` printed nothing and exited 0); a read filling the cache that
waited for data held a page lock that a writer's O_TRUNC waits for.  So
pipes report a size of one page, and reads the kernel sends without a process's
lock owner (page-cache fills) get EINVAL at once: splice and sendfile fail,
and busybox, pv, cp and Python's shutil go on with read().
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import logging
import os
import select
import stat
import time
from dataclasses import dataclass, field

import pyfuse3
import trio

from .errors import (
    Busy,
    DnpfsError,
    Interrupted,
    InvalidName,
    PipeExists,
    PipeGone,
    NoSuchPipe,
    ShuttingDown,
    StoreError,
    WouldBlock,
)
from .interrupts import dying_of_signal
from .names import MAX_NAME, decode, split_path
from .nodes import Nodes
from .pipes import Pipes
from .reader import ReaderHandle
from .writer import WriterSession

log = logging.getLogger(__name__)

REPLY_BUFFER = 1 << 20  # FUSE's largest read (256 pages)
PIPE_SIZE = 4096  # st_size of a pipe: one page, as sysfs files report (module doc)
PID_XATTR = b"user.dnpfs.pid"
PIDNS_XATTR = b"user.dnpfs.pidns"  # the daemon's PID namespace (inode of /proc/self/ns/pid)
STATUS_XATTR = b"user.dnpfs.status"  # the mount, as JSON (root)
STAT_XATTR = b"user.dnpfs.stat"  # one pipe, as JSON

# Readers opened by these programs get a seekable handle; every other handle
# is non-seekable (ESPIPE), as a FIFO is.  GNU head and tail insist on seeking
# a regular file: head seeks back over what it read past its last line
# ("cannot seek to relative offset -N", and `head -n -N` fails), tail seeks
# forward for `-c +N`.  For them a seek is harmless: head exits right after
# (on a FIFO those bytes are consumed too), and a forward seek is done by
# reading and dropping the bytes (`Filesystem.read`).  For anyone else a
# seekable pipe would lose data: the kernel moves the offset without telling
# us, so the bytes bash's `read` builtin gives back with lseek() (it reads
# 4 KiB at a time from a seekable file, one byte at a time from a pipe) would
# be gone, and sendfile() readers (Python's shutil.copyfile) would copy
# nothing.  The tool is known at lookup by /proc/PID/comm, the name of the
# program the process runs, and gets a node of its own (dnpfs/nodes.py); a
# shell running `head < pipe` opened the pipe, so head gets a non-seekable
# handle there.  docs/decisions.md has the alternatives tried.
SEEKING_TOOLS = frozenset({"head", "tail"})

# The one place where dnpfs errors become errno values.
_ERRNO = {
    InvalidName: errno.EINVAL,
    Busy: errno.EBUSY,
    PipeExists: errno.EEXIST,
    NoSuchPipe: errno.ENOENT,
    PipeGone: errno.EPIPE,
    StoreError: errno.EIO,
    Interrupted: errno.EINTR,
    WouldBlock: errno.EAGAIN,
    ShuttingDown: errno.ENOTCONN,
}


def pid_namespace() -> int:
    """This process's PID namespace, as the inode of its /proc link."""
    return os.stat("/proc/self/ns/pid").st_ino


def errno_for(error: DnpfsError) -> int:
    for cls in type(error).__mro__:
        if cls in _ERRNO:
            return _ERRNO[cls]
    return errno.EIO


def syscall(fn):
    """Every handler: dnpfs errors become their errno, anything unexpected is
    logged and becomes EIO.  A client's mistake never stops the daemon."""

    @functools.wraps(fn)
    async def handler(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except DnpfsError as e:
            code = errno_for(e)
            log.log(logging.INFO if code in (errno.EIO, errno.EPIPE) else logging.DEBUG,
                    "%s: %s (%s)", fn.__name__, e, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return handler


def _fail(code: int):
    raise pyfuse3.FUSEError(code)


def _program(pid: int) -> str | None:
    """The name of the program process *pid* runs, or None (pid 0: a caller
    outside our PID namespace; or already gone).  Asked at every lookup, so
    with os.open and one read, cheaper than open() (docs/decisions.md)."""
    if pid <= 0:
        return None
    try:
        fd = os.open(f"/proc/{pid}/comm", os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 64).rstrip(b"\n").decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass
class ReadOffset:
    """Where the kernel's file offset of a reading handle stands: every read
    brings it (``off``), and our answer moves it by the bytes returned."""

    ino: int  # the node it was opened on
    seekable: bool
    at: int = 0


class ReplyBuffer:
    """One buffer for every read reply made of several records.

    pyfuse3 copies a reply to the kernel as soon as the handler returns,
    before trio runs anything else, so one buffer serves every read of the
    mount.  Joining into new memory instead cost a page fault per 4 KiB: a
    1 MiB reply of 128 KiB records took ~630 us, a tenth of the daemon's CPU
    while reading a backlog (docs/decisions.md, the mmap threshold).  The
    buffer's pages stay resident: REPLY_BUFFER of RSS."""

    def __init__(self, size: int) -> None:
        self._buf = bytearray(size)  # never resized: replies may still view it
        self._view = memoryview(self._buf)

    def join(self, parts: tuple[bytes, ...]) -> bytes | memoryview:
        if len(parts) <= 1:
            return parts[0] if parts else b""
        at = 0
        for part in parts:
            end = at + len(part)
            if end > len(self._buf):
                return b"".join(parts)  # larger than any read the kernel sends
            self._view[at:end] = part
            at = end
        return self._view[:at]


@dataclass(frozen=True)
class Ownership:
    """Who owns every pipe of a mount (`-o uid=,gid=,mode=`).  With the
    kernel's default_permissions these are enforced on open, create and
    unlink; pipes do not carry modes of their own."""

    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)
    mode: int = 0o660

    @property
    def dir_mode(self) -> int:
        """The directory: whoever may read pipes may list, whoever may write may create."""
        return self.mode | ((self.mode & 0o444) >> 2)


class Filesystem(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    # O_TRUNC as setattr(size=0), answered with the pipe's size: with atomic
    # O_TRUNC the kernel set the size to 0 itself at a writer's open, and a
    # sendfile() reader (busybox cat) opening beside `echo x > pipe` met end
    # of file (module doc).
    enable_atomic_o_trunc = False

    def __init__(self, pipes: Pipes, owner: Ownership | None = None, *,
                 cache_seconds: float = 0.5) -> None:
        super().__init__()
        self.pipes = pipes
        self.owner = owner or Ownership()
        self.cache_seconds = cache_seconds
        self.mounted_ns = time.time_ns()
        # Inode numbers per path ("jobs" or "jobs@audit"), stable while
        # mounted, and per seeking tool and path.
        self._nodes = Nodes(pyfuse3.ROOT_INODE + 1)
        self._fifo_alias: dict[int, str] = {}  # mknod replies, see module doc
        self._fhs = itertools.count(1)
        self._handles: dict[int, ReaderHandle | WriterSession] = {}
        # For a clean stop (quiesce): reads being answered, and reader handles
        # not closed since their last read was answered (fh -> trio clock).
        self._reads_in_flight = 0
        self._answered: dict[int, float] = {}
        self._offsets: dict[int, ReadOffset] = {}  # reader fh -> its file offset
        self._reply = ReplyBuffer(REPLY_BUFFER)
        # The lock owner the kernel sent with the read being answered: 0 for
        # its own page-cache fills (module doc).  An attribute, so that tests
        # calling the handlers without FUSE (tests/api) can say who reads.
        self.read_lock_owner = pyfuse3.read_lock_owner

    # -- inodes and attributes ---------------------------------------------
    def _attr(self, ino: int, mode: int, size: int = 0) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        a.st_mode = mode
        a.st_nlink = 2 if stat.S_ISDIR(mode) else 1
        a.st_uid, a.st_gid = self.owner.uid, self.owner.gid
        a.st_size = size
        # Blocks that cover the size: GNU cp takes a file with fewer for
        # sparse and seeks for its holes (ESPIPE on a pipe).
        a.st_blocks = (size + 511) // 512
        a.st_blksize = 1 << 20  # tools size their buffers by it: cat reads 1 MiB at once
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.mounted_ns
        a.entry_timeout = a.attr_timeout = self.cache_seconds
        return a

    def _pipe_attr(self, path: str, ino: int | None = None) -> pyfuse3.EntryAttributes:
        """A pipe's attributes on node *ino* (by default its shared node)."""
        if ino is None:
            ino = self._nodes.shared(path)
        a = self._attr(ino, stat.S_IFREG | self.owner.mode, self._size_for(ino))
        # A seeking tool's size changes with every read, and the name leads
        # each process to its own node: the kernel must cache neither (each
        # open then looks the name up, with the opener's pid).
        a.attr_timeout = a.entry_timeout = 0
        return a

    def _entry(self, path: str, pid: int) -> pyfuse3.EntryAttributes:
        """The reply to a lookup of *path* by process *pid*: a seeking tool
        (SEEKING_TOOLS) gets its own node of the pipe (dnpfs/nodes.py)."""
        if _program(pid) in SEEKING_TOOLS:
            return self._pipe_attr(path, self._nodes.looked_up_by_tool(path, pid))
        return self._pipe_attr(path)

    def _size_for(self, ino: int) -> int:
        """A pipe's size on node *ino*.  On a seeking tool's node: how far its
        handles have read, 0 before.  `tail -f` polls the size and takes one
        below what it read for a truncated file ("file truncated", then a
        seek to 0), and starting at 0 makes tail -n/-c and head -n -N read
        the pipe to EOF instead of seeking to its end.  On the shared node
        one page, PIPE_SIZE: above 0, so that splice and sendfile reach us
        (module doc); its handles cannot seek, so no tool takes it for the
        pipe's length."""
        if not self._nodes.is_tool(ino):
            return PIPE_SIZE
        return max((o.at for o in self._offsets.values() if o.ino == ino), default=0)

    def _path(self, ino: int) -> str:
        path = self._nodes.path(ino) or self._fifo_alias.get(ino)
        if path is None:
            _fail(errno.ENOENT)
        return path

    @staticmethod
    def _check_parent(parent: int) -> None:
        if parent != pyfuse3.ROOT_INODE:
            _fail(errno.ENOENT)

    @syscall
    async def lookup(self, parent_inode, name, ctx):
        self._check_parent(parent_inode)
        try:
            path = decode(name)
            pipe, _ = split_path(path)
        except InvalidName:
            _fail(errno.ENOENT)
        if not await self.pipes.exists(pipe):
            _fail(errno.ENOENT)
        return self._entry(path, ctx.pid)

    @syscall
    async def getattr(self, inode, ctx):
        if inode == pyfuse3.ROOT_INODE:
            return self._attr(inode, stat.S_IFDIR | self.owner.dir_mode)
        if inode in self._fifo_alias:
            a = self._attr(inode, stat.S_IFIFO | self.owner.mode)
            a.attr_timeout = 0
            return a
        return self._pipe_attr(self._path(inode), inode)

    async def forget(self, inode_list):
        for ino, lookups in inode_list:
            self._fifo_alias.pop(ino, None)
            self._nodes.forget(ino, lookups)

    @syscall
    async def setattr(self, inode, attr, fields, fh, ctx):
        if inode == pyfuse3.ROOT_INODE:
            _fail(errno.EPERM)
        if fields.update_mode or fields.update_uid or fields.update_gid:
            _fail(errno.EPERM)
        if fields.update_size:
            # O_TRUNC and truncate(0) are accepted and drop nothing: what was
            # written is already in the pipe for its readers.
            if attr.st_size != 0:
                _fail(errno.EINVAL)
        elif fields.update_atime or fields.update_mtime or fields.update_ctime:
            _fail(errno.EPERM)
        return await self.getattr(inode, ctx)

    # -- directory -----------------------------------------------------------
    @syscall
    async def opendir(self, inode, ctx):
        if inode != pyfuse3.ROOT_INODE:
            _fail(errno.ENOTDIR)
        return inode

    @syscall
    async def readdir(self, fh, start_id, token):
        names = await self.pipes.list()
        for i, name in enumerate(names[start_id:], start=start_id + 1):
            if not pyfuse3.readdir_reply(token, name.encode(), self._pipe_attr(name), i):
                break

    async def releasedir(self, fh):
        pass

    @syscall
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = MAX_NAME
        return s

    # -- create and delete ---------------------------------------------------
    async def _create(self, raw: bytes) -> str:
        path = decode(raw)
        if "@" in path:
            split_path(path)  # EINVAL for a bad name
            raise NoSuchPipe(f"{path}: a reader group needs an existing pipe")
        if not await self.pipes.create(path):
            raise PipeExists(path)
        return path

    @syscall
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        self._check_parent(parent_inode)
        if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
            _fail(errno.EPERM)
        path = await self._create(name)
        if stat.S_ISREG(mode):
            return self._pipe_attr(path)
        alias = self._nodes.new_id()
        self._fifo_alias[alias] = path
        attr = self._attr(alias, stat.S_IFIFO | self.owner.mode)
        attr.entry_timeout = attr.attr_timeout = 0
        return attr

    @syscall
    async def create(self, parent_inode, name, mode, flags, ctx):
        self._check_parent(parent_inode)
        path = await self._create(name)
        fi = await self._open_path(path, self._nodes.shared(path), flags, ctx)
        return fi, self._pipe_attr(path)

    @syscall
    async def unlink(self, parent_inode, name, ctx):
        self._check_parent(parent_inode)
        try:
            pipe, group = split_path(decode(name))
        except InvalidName:
            _fail(errno.ENOENT)
        if group:
            await self.pipes.delete_group(pipe, group)
        else:
            await self.pipes.delete(pipe)

    @syscall
    async def mkdir(self, parent_inode, name, mode, ctx):
        _fail(errno.EPERM)  # one flat directory of pipes

    @syscall
    async def rmdir(self, parent_inode, name, ctx):
        _fail(errno.ENOTDIR)

    @syscall
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        _fail(errno.ENOTSUP)  # a Kafka topic cannot be renamed either

    @syscall
    async def link(self, inode, new_parent_inode, new_name, ctx):
        _fail(errno.ENOTSUP)

    @syscall
    async def symlink(self, parent_inode, name, target, ctx):
        _fail(errno.ENOTSUP)

    # -- open, read, write ---------------------------------------------------
    @syscall
    async def open(self, inode, flags, ctx):
        if inode == pyfuse3.ROOT_INODE:
            _fail(errno.EISDIR)
        return await self._open_path(self._path(inode), inode, flags, ctx)

    async def _open_path(self, path: str, ino: int, flags: int, ctx) -> pyfuse3.FileInfo:
        pipe, group = split_path(path)
        mode = flags & os.O_ACCMODE
        seekable = False
        if mode == os.O_RDONLY:
            handle = await self.pipes.open_reader(
                pipe, group, ctx.pid, bool(flags & os.O_NONBLOCK), bool(flags & os.O_DIRECT)
            )
            seekable = self._nodes.is_tool(ino)
        elif mode == os.O_WRONLY:
            handle = await self.pipes.open_writer(
                pipe, ctx.pid, bool(flags & (os.O_SYNC | os.O_DSYNC))
            )
        else:
            _fail(errno.EINVAL)  # O_RDWR: a pipe end is for reading or for writing
        fh = next(self._fhs)
        self._handles[fh] = handle
        if mode == os.O_RDONLY:
            self._offsets[fh] = ReadOffset(ino, seekable)
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False,
                                nonseekable=not seekable)

    def _handle(self, fh: int, kind: type):
        handle = self._handles.get(fh)
        if not isinstance(handle, kind):
            _fail(errno.EBADF)
        return handle

    @syscall
    async def read(self, fh, off, size):
        handle = self._handle(fh, ReaderHandle)
        if not self.read_lock_owner():
            log.debug("read of %s to fill the page cache (splice, sendfile): EINVAL", handle.name)
            _fail(errno.EINVAL)  # the page-cache trap (module doc)
        offset = self._offsets[fh]
        self._reads_in_flight += 1
        try:
            # A seekable handle (SEEKING_TOOLS) that seeked ahead (`tail -c
            # +N`): the bytes in between are read and dropped, as the tool
            # would on a FIFO.  Behind (head gave back what it read past its
            # last line): those bytes were consumed, reading goes on.  (Without
            # seeks, concurrent reads of threads sharing a handle can also
            # bring an offset ahead of our last answer: never skip for those.)
            ahead = off - offset.at if offset.seekable else 0
            if ahead > 0 and not await self._skip(handle, offset, ahead):
                parts = ()
            else:
                parts = await handle.read(size)
        finally:
            self._reads_in_flight -= 1
        self._answered[fh] = trio.current_time()
        offset.at = off + sum(map(len, parts))
        return self._reply.join(parts)

    async def _skip(self, handle: ReaderHandle, offset: ReadOffset, count: int) -> bool:
        """Read and drop *count* bytes; False at EOF."""
        while count > 0:
            dropped = sum(map(len, await handle.read(min(count, REPLY_BUFFER))))
            if not dropped:
                return False
            offset.at += dropped
            count -= dropped
        return True

    async def quiesce(self, since: float, deadline: float) -> None:
        """After ``Pipes.shutdown``: keep answering until no read is in flight
        and every reader handle whose read was answered after *since* (trio
        clock) was closed, or until *deadline*.  A process given data comes
        back for EOF, and one given EOF closes its file; once the mount is
        gone, that read or close would fail (ENOTCONN, ECONNABORTED: `cat`
        exits 1) instead of ending cleanly."""
        with trio.move_on_at(deadline):
            while self._reads_in_flight or any(t >= since for t in self._answered.values()):
                await trio.sleep(0.02)

    @syscall
    async def write(self, fh, off, buf):
        return await self._handle(fh, WriterSession).write(buf)

    @syscall
    async def flush(self, fh):
        self._answered.pop(fh, None)  # close(): a reader of it is done
        handle = self._handles.get(fh)
        if isinstance(handle, ReaderHandle):
            if dying_of_signal(handle.pid):
                handle.killed = True  # its job is not done: given back at release
            elif handle.held is not None:
                try:
                    await handle.put_back()
                except DnpfsError as e:  # the close succeeds: the store still has the rest
                    log.warning("giving back the rest of a record at close: %s", e)
        await self._sync(fh)

    @syscall
    async def fsync(self, fh, datasync):
        await self._sync(fh)

    async def _sync(self, fh) -> None:
        handle = self._handles.get(fh)
        if isinstance(handle, WriterSession):
            await handle.flush()

    @syscall
    async def release(self, fh):
        handle = self._handles.pop(fh, None)
        self._answered.pop(fh, None)
        self._offsets.pop(fh, None)
        if isinstance(handle, WriterSession):
            await self.pipes.close_writer(handle)
        elif isinstance(handle, ReaderHandle):
            await self.pipes.close_reader(handle)

    @syscall
    async def poll(self, inode, fh, poll_handle, ctx):
        handle = self._handles.get(fh)
        if isinstance(handle, WriterSession):
            return select.POLLOUT | select.POLLWRNORM if handle.outbox.has_room else 0
        if not isinstance(handle, ReaderHandle):
            _fail(errno.EBADF)
        if poll_handle is not None:
            handle.poll_handle = poll_handle  # replaced before checking: no missed wake-up
        if await handle.readable():
            return select.POLLIN | select.POLLRDNORM
        return 0

    # -- extended attributes -------------------------------------------------
    @syscall
    async def getxattr(self, inode, name, ctx):
        values = await self._xattrs(inode)
        if name not in values:
            _fail(pyfuse3.ENOATTR)
        return values[name]

    @syscall
    async def listxattr(self, inode, ctx):
        return list(await self._xattrs(inode))

    async def _xattrs(self, inode: int) -> dict[bytes, bytes]:
        """Read-only status as extended attributes (`getfattr -d`, `dnpfs status`)."""
        if inode == pyfuse3.ROOT_INODE:
            summary = await self.pipes.summary()
            summary["pid"] = os.getpid()
            return {
                PID_XATTR: str(os.getpid()).encode(),  # lets `dnpfs umount` find the daemon
                PIDNS_XATTR: str(pid_namespace()).encode(),  # ... if it can signal it
                STATUS_XATTR: json.dumps(summary).encode(),
            }
        if inode in self._fifo_alias:
            return {}
        pipe, _ = split_path(self._path(inode))
        info = await self.pipes.describe(pipe)
        values = {
            b"user.dnpfs.records": info["records"],
            b"user.dnpfs.bytes": info["bytes"],
            b"user.dnpfs.writers_here": info["writers_here"],
            b"user.dnpfs.readers_here": sum(g["readers_here"] for g in info["groups"].values()),
        }
        for group, g in info["groups"].items():
            if g["backlog_records"] is not None:
                values[f"user.dnpfs.backlog.{group or 'default'}".encode()] = (
                    f"{g['backlog_records']} records, {g['backlog_bytes']} bytes")
            if "membership" in g:
                values[f"user.dnpfs.membership.{group or 'default'}".encode()] = g["membership"]
            for key in ("redelivered", "set_aside"):
                if key in g:
                    values[f"user.dnpfs.{key}.{group or 'default'}".encode()] = g[key]
        out = {k: str(v).encode() for k, v in values.items() if v is not None}
        out[STAT_XATTR] = json.dumps(info).encode()
        return out

    @syscall
    async def setxattr(self, inode, name, value, ctx):
        _fail(errno.ENOTSUP)

    @syscall
    async def removexattr(self, inode, name, ctx):
        _fail(errno.ENOTSUP)

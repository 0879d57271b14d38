"""The mount's life: checks before mounting, running the daemon, stopping it.

Every check failure is a MountError whose message is the one line the user
sees.  The daemon stops cleanly on SIGTERM/SIGINT: new opens are refused,
blocked readers get EOF, writers' records are stored, then the mount goes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyfuse3
import trio

from . import allocator, interrupts, metrics
from .access import FileAccess
from .backends.base import Backend
from .fs import PID_XATTR, PIDNS_XATTR, Filesystem, Ownership, pid_namespace
from .pipes import Pipes

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 4.0  # leaves time to unmount inside the promised 5 s
# Then readers answered since READING_SECONDS before the signal come back for
# EOF and close their files: for up to READERS_SECONDS, within STOP_SECONDS.
READING_SECONDS = 1.0
READERS_SECONDS = 1.5
STOP_SECONDS = 4.5


class MountError(Exception):
    """One line for the user; the command exits non-zero."""


def mounts() -> list[tuple[str, str]]:
    """(mountpoint, fstype) of every mount, unescaped."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].encode().decode("unicode_escape")
            mounts.append((point, right.split()[0]))
    return mounts


def mount_type(path: Path) -> str | None:
    target = os.path.abspath(path)
    found = None
    for point, fstype in mounts():
        if point == target:
            found = fstype  # the last one is on top
    return found


def _lazy_unmount(path: Path) -> None:
    cmd = ["umount", "-l", str(path)] if os.geteuid() == 0 else ["fusermount3", "-u", "-z", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise MountError(f"cannot unmount {path}: {result.stderr.strip() or result.returncode}")


def check_mountpoint(path: Path) -> None:
    """Refuse what cannot work; clean up a stale mount left by a killed daemon."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mountpoint {path} does not exist") from None
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise MountError(f"mountpoint {path}: {e.strerror}") from None
        log.warning("%s: stale mount of a dead daemon; unmounting it", path)
        _lazy_unmount(path)
    fstype = mount_type(path)
    if fstype is not None and fstype.startswith("fuse"):
        try:
            os.getxattr(path, PID_XATTR)
            raise MountError(f"{path} is already mounted (dnpfs)")
        except OSError as e:
            if e.errno == errno.ENOTCONN:
                _lazy_unmount(path)
            else:
                raise MountError(f"{path} is already mounted ({fstype})") from None
    if not path.is_dir():
        raise MountError(f"mountpoint {path} is not a directory")
    if any(path.iterdir()):
        raise MountError(f"mountpoint {path} is not empty")


def check_fuse_device() -> None:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
    except FileNotFoundError:
        raise MountError("/dev/fuse is missing: load the fuse module or pass --device /dev/fuse to the container") from None
    except OSError as e:
        raise MountError(f"cannot open /dev/fuse: {e.strerror}") from None
    os.close(fd)


def fuse_options(extra: list[str]) -> tuple[set[str], Ownership, FileAccess]:
    """FUSE mount options from `-o`, and the uid=, gid=, mode= ones dnpfs
    applies itself (libfuse's low-level API has no such options): to the
    pipes, and to the files the mount keeps on disk (access.py)."""
    opts = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    owner: dict[str, int] = {}
    for item in extra:
        for opt in filter(None, item.split(",")):
            key, _, value = opt.partition("=")
            if key in ("uid", "gid", "mode"):
                try:
                    owner[key] = int(value, 8 if key == "mode" else 10)
                except ValueError:
                    raise MountError(f"-o {opt}: not a number") from None
                if key == "mode" and not 0 <= owner[key] <= 0o777:
                    raise MountError(f"-o {opt}: mode must be 0 to 0777")
            else:
                opts.add(opt)
    return opts, Ownership(**owner), FileAccess.like_pipes(**{k: owner.get(k) for k in
                                                             ("uid", "gid", "mode")})


def serve(
    backend: Backend,
    mountpoint: Path,
    options: set[str],
    owner: Ownership,
    *,
    max_tasks: int,
    buffer_bytes: int,
    delivery_timeout: float,
    session_timeout: float = 30.0,
    metrics_address: str | None = None,
    malloc: str = allocator.SYSTEM,
    on_ready: Callable[[str | None], None],
) -> int:
    """Run the daemon until unmounted or signalled.  *on_ready(None)* once the
    mount answers, or *on_ready(message)* if it could not start."""
    if malloc == allocator.SYSTEM:
        allocator.keep_buffers_in_own_mappings()
    if not interrupts.SUPPORTED:
        on_ready(interrupts.UNSUPPORTED_MESSAGE)
        return 1
    pipes = Pipes(backend, buffer_bytes=buffer_bytes, delivery_timeout=delivery_timeout,
                  session_timeout=session_timeout)
    fs = Filesystem(pipes, owner)
    mounted = False

    async def main() -> None:
        nonlocal mounted
        async with trio.open_nursery() as nursery:
            await nursery.start(pipes.run)
            if metrics_address:
                await nursery.start(metrics.serve, metrics_address)
            # The source `mount` and `df` show, and the type fuse.dnpfs.
            pyfuse3.init(fs, str(mountpoint),
                         {*options, f"fsname=dnpfs:{backend.description}", "subtype=dnpfs"})
            mounted = True
            nursery.start_soon(_stop_on_signal, pipes, fs)
            on_ready(None)
            log.info("mounted %s on %s (malloc: %s)", backend.description, mountpoint, malloc)
            # Each blocked read holds one task: 1,000 blocked readers need
            # 1,000 tasks, and more must stay free for everything else.
            with _interrupting_stuck_fuse_reads():
                await pyfuse3.main(min_tasks=4, max_tasks=max_tasks)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except Exception as e:
        if not mounted:
            on_ready(_one_line(e))
            return 1
        log.exception("daemon failed")
        return 1
    finally:
        if mounted:
            pyfuse3.close(unmount=True)
            log.info("unmounted %s", mountpoint)
    return 0


def _one_line(error: BaseException) -> str:
    """The message of the first real error inside trio's exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return str(error) or type(error).__name__


@contextlib.contextmanager
def _interrupting_stuck_fuse_reads(interval: float = 0.2) -> Iterator[None]:
    """pyfuse3 reads /dev/fuse holding the GIL, once trio said it is readable.
    A request withdrawn in between (its process was killed before we read
    it) leaves that read blocked, the GIL held, and every thread of the
    daemon stopped (blocked readers, the Kafka client, timers) until some
    other request arrives, which may be never: seen after kill -9 of 600
    readers.  A periodic SIGALRM, which goes to the main thread, ends such a
    read with EINTR; pyfuse3 then waits for the fd again.  Elsewhere Python
    retries interrupted calls (PEP 475), so the timer costs a wake-up.
    Disarmed on the way out: at exit Python restores SIGALRM's default
    action, which would kill the daemon."""
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    signal.setitimer(signal.ITIMER_REAL, interval, interval)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


async def _stop_on_signal(pipes: Pipes, fs: Filesystem) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: stopping", signal.Signals(signum).name)
            start = trio.current_time()
            await pipes.shutdown(SHUTDOWN_SECONDS)
            await fs.quiesce(start - READING_SECONDS,
                             min(start + STOP_SECONDS, trio.current_time() + READERS_SECONDS))
            log.info("stopped taking work after %.2fs; unmounting", trio.current_time() - start)
            pyfuse3.terminate()
            return


def unmount(path: Path, timeout: float = 10.0) -> None:
    """Ask the daemon to stop (it wakes blocked readers and flushes writers),
    then wait for the mount to go.  A mount whose daemon died is detached."""
    path = Path(os.path.abspath(path))
    fstype = mount_type(path)
    if fstype is None:
        raise MountError(f"{path} is not mounted")
    try:
        pid = int(os.getxattr(path, PID_XATTR))
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            _lazy_unmount(path)
            return
        raise MountError(f"{path} is not a dnpfs mount ({fstype})") from None
    try:
        namespace = int(os.getxattr(path, PIDNS_XATTR))
    except OSError:
        namespace = pid_namespace()  # a daemon older than the attribute
    if namespace != pid_namespace():
        # Its pid means another process here (in a container it is often 1).
        raise MountError(f"{path}: the daemon runs in another PID namespace (a container or"
                         f" pod): stop it there (docker stop), or detach with umount -l {path}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while mount_type(path) is not None:
        if time.monotonic() > deadline:
            raise MountError(f"{path}: daemon {pid} did not stop within {timeout:.0f}s")
        time.sleep(0.05)

"""Which malloc the daemon runs on: jemalloc where the system has it.

pyfuse3 allocates and frees a 1 MiB receive buffer per worker task and
aiokafka copies each multi-MiB fetch response twice.  glibc's malloc can
either keep those in fresh mappings (a page fault per 4 KiB touched) or let
the heap grow under hundreds of blocked readers (docs/decisions.md);
jemalloc reuses large blocks without either: backlog reads 1.6-2x faster.
A library can only replace malloc before the process starts, so `dnpfs
mount` execs itself once with jemalloc in LD_PRELOAD.  DNPFS_MALLOC=system
keeps glibc's, with its mmap threshold fixed for pyfuse3's buffers; another
NAME preloads libNAME.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = "DNPFS_MALLOC"
DEFAULT = "jemalloc"
SYSTEM = "system"
# Set across the exec: the allocator asked for, then the LD_PRELOAD to restore.
_MARK = "_DNPFS_PRELOADED"
_M_MMAP_THRESHOLD = -3  # mallopt(3)


def restart_preloaded() -> None:
    """Exec this command again with the chosen malloc preloaded; returns
    only when there is nothing to do (already done, opted out, not found)."""
    choice = os.environ.get(ENV, DEFAULT)
    if choice == SYSTEM or _MARK in os.environ:
        return
    library = ctypes.util.find_library(choice)
    if library is None:
        if ENV in os.environ:  # asked for by name: say why it is not used
            print(f"dnpfs: {ENV}={choice}: lib{choice} not found, using the system malloc",
                  file=sys.stderr)
        return
    previous = os.environ.get("LD_PRELOAD", "")
    env = dict(os.environ, LD_PRELOAD=f"{library} {previous}".strip())
    env[_MARK] = f"{choice}:{previous}"
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv keeps interpreter options and the way dnpfs was called
    # (entry point, -m dnpfs, or mount.fuse3's `dnpfs SOURCE DIR -o ...`).
    os.execve(sys.executable, sys.orig_argv, env)


def in_use() -> str:
    """The malloc this process runs on.  Restores LD_PRELOAD, so programs
    the daemon starts (fusermount3) run as they would have."""
    mark = os.environ.pop(_MARK, None)
    if mark is None:
        return SYSTEM
    choice, _, previous = mark.partition(":")
    if previous:
        os.environ["LD_PRELOAD"] = previous
    else:
        os.environ.pop("LD_PRELOAD", None)
    # The loader only warns when a preload fails: believe the mappings.
    with open("/proc/self/maps") as maps:
        loaded = any(f"lib{choice}" in line for line in maps)
    return choice if loaded else SYSTEM


def keep_buffers_in_own_mappings() -> None:
    """pyfuse3 gives each worker task a receive buffer of 1 MiB + 4 KiB and
    frees it when the task ends.  After the first such free glibc raises its
    mmap threshold, so later buffers come from the heap at ever new places and
    the pages the kernel wrote requests into stay resident: a daemon with
    hundreds of blocked readers grew by ~0.6 MiB/s for a whole 5-minute load
    run (docs/reliability.md).  A fixed threshold keeps each buffer in a
    mapping of its own, returned to the system when the task ends.  For
    glibc's malloc only: jemalloc needs no such setting."""
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune

"""`dnpfs status`: what a running mount holds, read from its xattrs.

The daemon answers ``user.dnpfs.status`` on the mount's root and
``user.dnpfs.stat`` on each pipe (JSON), so this needs no other channel.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .fs import STAT_XATTR, STATUS_XATTR
from .mount import MountError, mount_type, mounts


def dnpfs_mounts() -> list[Path]:
    return [Path(point) for point, fstype in mounts() if fstype == "fuse.dnpfs"]


def collect(mountpoint: Path) -> dict:
    mountpoint = Path(os.path.abspath(mountpoint))
    if mount_type(mountpoint) != "fuse.dnpfs":
        raise MountError(f"{mountpoint} is not a dnpfs mount")
    try:
        mount = json.loads(os.getxattr(mountpoint, STATUS_XATTR))
        pipes = []
        for name in sorted(os.listdir(mountpoint)):
            try:
                pipes.append(json.loads(os.getxattr(mountpoint / name, STAT_XATTR)))
            except FileNotFoundError:
                continue  # deleted meanwhile
    except OSError as e:
        raise MountError(f"{mountpoint}: {e.strerror} (is the daemon alive?)") from None
    return {"mountpoint": str(mountpoint), **mount, "pipes": pipes}


def collect_or_dead(mountpoint: Path) -> dict:
    try:
        return collect(mountpoint)
    except MountError as e:
        return {"mountpoint": str(mountpoint), "backend": "?", "pid": "-", "pipes": [],
                "health": f"not answering: {e} (umount -l, or dnpfs mount again, cleans it)"}


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def render(status: dict) -> str:
    lines = [
        f"{status['mountpoint']}: {status['backend']}  "
        + (f"default group: {status['default_group']}  " if status.get("default_group") else "")
        + f"health: {status['health']}  "
        f"pid {status['pid']}  pipes: {status['pipes'] if isinstance(status['pipes'], int) else len(status['pipes'])}",
    ]
    rows = [("PIPE", "RECORDS", "BYTES", "WRITERS", "READERS", "BACKLOG per group (records/bytes)")]
    for p in status["pipes"]:
        backlog = "  ".join(
            f"{g or 'default'} {s['backlog_records'] if s['backlog_records'] is not None else '-'}"
            f"/{_size(s['backlog_bytes'])}" + (f" ({s['membership']})" if "membership" in s else "")
            + (f" (redelivered {s['redelivered']})" if s.get("redelivered") else "")
            + (f" (set aside {s['set_aside']})" if s.get("set_aside") else "")
            for g, s in p["groups"].items()
        )
        readers = sum(s["readers_here"] for s in p["groups"].values())
        rows.append((p["pipe"], "-" if p["records"] is None else str(p["records"]),
                     _size(p["bytes"]), str(p["writers_here"]), str(readers), backlog))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:5], widths[1:])]
        lines.append("  ".join(cells + [r[5]]).rstrip())
    return "\n".join(lines)

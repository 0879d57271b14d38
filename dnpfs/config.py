"""Mount settings from other places than the command line: a TOML file with
the same options, and the fstab calling convention of mount.fuse3.

    # /etc/dnpfs/dnpfs.toml           dnpfs mount --config /etc/dnpfs/dnpfs.toml /mnt/dnpipes
    kafka = "broker1:9092,broker2:9092"
    topic-prefix = "prod."
    options = ["allow_other"]

    # /etc/fstab: mount.fuse3 runs `dnpfs SOURCE MOUNTPOINT -o OPTIONS`
    dnpfs                 /mnt/dnpipes  fuse.dnpfs  defaults,allow_other  0 0
    kafka:broker1:9092    /mnt/kpipes   fuse.dnpfs  topic-prefix=prod.,_netdev  0 0
    /srv/pipes.sqlite     /mnt/spipes   fuse.dnpfs  retention-days=1  0 0
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

# Every `dnpfs mount` option that may come from a file, with its type.
MOUNT_OPTIONS: dict[str, type] = {
    "store": Path,
    "kafka": str,
    "topic-prefix": str,
    "kafka-config": Path,
    "replication-factor": int,
    "fetch-mib": int,
    "share-groups": str,
    "foreground": bool,
    "options": list,
    "log-file": Path,
    "debug": bool,
    "log-format": str,
    "metrics": str,
    "retention-days": float,
    "retention-check": float,
    "buffer-mib": int,
    "delivery-timeout": float,
    "session-timeout": float,
    "max-tasks": int,
}

# fstab options meant for mount(8) or systemd, not for the filesystem.
_FSTAB_ONLY = {"defaults", "auto", "noauto", "user", "nouser", "users", "nofail", "_netdev"}


class ConfigError(ValueError):
    """One readable line about a bad configuration."""


def load_toml(path: Path) -> dict[str, Any]:
    """The file's settings as argparse destinations (``topic_prefix``...)."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: {e}") from None
    settings = {}
    for key, value in raw.items():
        name = key.replace("_", "-")
        kind = MOUNT_OPTIONS.get(name)
        if kind is None:
            raise ConfigError(f"config {path}: unknown setting {key!r}")
        if kind is list:
            if isinstance(value, str):
                value = [value]
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"config {path}: {key} must be a list of strings")
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif kind is Path and isinstance(value, str):
            value = Path(value)
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"config {path}: {key} must be a {kind.__name__}")
        settings[name.replace("-", "_")] = value
    return settings


def fstab_argv(argv: list[str]) -> list[str] | None:
    """``SOURCE MOUNTPOINT [-o OPTS]`` (as mount.fuse3 calls us) -> mount argv,
    or None when *argv* is an ordinary command line."""
    if len(argv) < 2 or argv[0].startswith("-") or argv[0] in ("mount", "umount", "status"):
        return None
    source, mountpoint, rest = argv[0], argv[1], argv[2:]
    out = ["mount"]
    if source.startswith("kafka:"):
        out += ["--kafka", source.removeprefix("kafka:")]
    elif source.startswith("sqlite:"):
        out += ["--store", source.removeprefix("sqlite:")]
    elif source.startswith("/"):
        out += ["--store", source]
    elif source not in ("dnpfs", "none", "default"):
        raise ConfigError(f"unknown source {source!r}: use dnpfs, /path/to/store, "
                          "sqlite:/path or kafka:HOST:PORT")
    fuse: list[str] = []
    opts: list[str] = []
    it = iter(rest)
    for arg in it:
        if arg == "-o":
            opts += next(it, "").split(",")
        elif arg.startswith("-o"):
            opts += arg[2:].split(",")
        else:
            out.append(arg)  # e.g. -f from a debugging user
    for opt in filter(None, opts):
        key, eq, value = opt.partition("=")
        name = key.replace("_", "-")
        if key in _FSTAB_ONLY or key.startswith(("x-", "comment=")):
            continue
        if name == "config":
            out += ["--config", value]
        elif name in MOUNT_OPTIONS and name != "options":
            if MOUNT_OPTIONS[name] is bool:
                out.append(f"--{name}")
            else:
                out += [f"--{name}", value]
        else:
            fuse.append(opt)  # rw, nosuid, allow_other...: for FUSE itself
    if fuse:
        out += ["-o", ",".join(fuse)]
    return out + [mountpoint]

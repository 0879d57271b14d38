"""Which names are pipes, and how ``pipe@group`` paths are read."""

from __future__ import annotations

import re

from .errors import InvalidName

# Kafka's own rule for topic names, applied on every backend so that a pipe
# created on the embedded store can later move to Kafka unchanged.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
MAX_NAME = 249
DEFAULT_GROUP = ""


def check_name(name: str, what: str = "pipe") -> str:
    # "__" starts the names Kafka and dnpfs keep for themselves (heartbeats).
    if name in (".", "..") or name.startswith("__") or not _NAME.fullmatch(name):
        raise InvalidName(
            f"invalid {what} name {name!r}: use 1-{MAX_NAME} of [A-Za-z0-9._-],"
            " not '.', '..' or a leading '__'"
        )
    return name


def split_path(entry: str) -> tuple[str, str]:
    """``jobs@audit`` -> ("jobs", "audit"); ``jobs`` -> ("jobs", DEFAULT_GROUP)."""
    pipe, sep, group = entry.partition("@")
    check_name(pipe)
    if sep:
        check_name(group, "reader group")
    return pipe, group if sep else DEFAULT_GROUP


def decode(raw: bytes) -> str:
    """Directory entries arrive as bytes; a name that is not ASCII is no pipe name."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidName(f"invalid pipe name {raw!r}: not ASCII") from None

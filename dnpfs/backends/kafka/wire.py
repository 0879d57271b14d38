"""What dnpfs puts in Kafka, so that any Kafka client can take part.

Records (see docs/wire-format.md):

- the value is exactly the bytes of one write() for DATA, empty for markers;
- header ``dnpfs.session``: the writer session id, ASCII;
- header ``dnpfs.kind``: ``data``, ``begin`` or ``end``.

A record without a valid ``dnpfs.kind`` (a plain producer's record) is DATA
of no session: it carries bytes and never opens or closes a session.

Reader-group cursors are the group's committed offset (the next record to
deliver) plus commit metadata: compact JSON ``{"v":1,"pos":N,"open":[...]}``,
the bytes of that record already delivered and the open writer sessions.

Everything here is pure: no I/O, no asyncio.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from ...model import Cursor, Kind, Record, StoredRecord

log = logging.getLogger(__name__)

SESSION_HEADER = "dnpfs.session"
KIND_HEADER = "dnpfs.kind"
CURSOR_VERSION = 1
# Kafka refuses commit metadata over offset.metadata.max.bytes (default 4096).
MAX_METADATA = 4000

_KINDS = {k.value.encode(): k for k in Kind.stored()}
_KIND_BYTES = {k: k.value.encode() for k in Kind.stored()}


def encode_record(record: Record) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The value and headers of *record*."""
    headers = [(KIND_HEADER, _KIND_BYTES[record.kind])]
    if record.session is not None:
        headers.insert(0, (SESSION_HEADER, record.session.encode("ascii")))
    return (record.data if record.kind is Kind.DATA else b""), headers


def decode_record(
    offset: int, value: bytes | None, headers: Iterable[tuple[str, bytes | None]]
) -> StoredRecord:
    """A Kafka record as dnpfs sees it.  Never fails: what it cannot read is plain data."""
    kind_raw = session_raw = None
    for key, raw in headers or ():
        if key == KIND_HEADER and kind_raw is None:
            kind_raw = raw
        elif key == SESSION_HEADER and session_raw is None:
            session_raw = raw
    data = value or b""
    kind = _KINDS.get(kind_raw) if kind_raw is not None else None
    session = _session(session_raw) if kind is not None else None
    if kind is None:
        return StoredRecord(offset, Kind.DATA, None, data)
    if kind is not Kind.DATA:
        data = b""  # a marker's value means nothing
    return StoredRecord(offset, kind, session, data)


def _session(raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


# -- cursors -----------------------------------------------------------------

def encode_cursor(cursor: Cursor) -> str:
    """Commit metadata for *cursor*; the committed offset is ``cursor.offset``."""
    sessions = sorted(cursor.open_sessions)
    while True:
        body = {"v": CURSOR_VERSION, "pos": cursor.byte_pos, "open": sessions}
        text = json.dumps(body, separators=(",", ":"))
        if len(text.encode()) <= MAX_METADATA:
            return text
        # Hundreds of writers open at once: keep what fits.  A dropped session
        # can only make EOF come early, once every kept one has ended.
        keep = len(sessions) * MAX_METADATA // len(text.encode())
        log.warning("cursor metadata too long: keeping %d of %d open sessions", keep,
                    len(cursor.open_sessions))
        sessions = sessions[:keep]


def decode_cursor(offset: int, metadata: str | None) -> Cursor:
    """The cursor committed at *offset* (-1: none) with *metadata*.

    Metadata dnpfs did not write (an offset reset with kafka-consumer-groups,
    say) means the record at *offset* is untouched and no session is open.
    """
    if offset < 0:
        return Cursor()
    if not metadata:
        return Cursor(offset)
    try:
        body = json.loads(metadata)
        pos = body.get("pos", 0)
        sessions = body.get("open", [])
        if (
            not isinstance(pos, int) or pos < 0
            or not isinstance(sessions, list)
            or not all(isinstance(s, str) for s in sessions)
        ):
            raise ValueError("unexpected fields")
    except (ValueError, AttributeError) as e:
        log.warning("ignoring commit metadata %.80r: %s", metadata, e)
        return Cursor(offset)
    return Cursor(offset, pos, frozenset(sessions))

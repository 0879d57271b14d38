"""systemd's readiness protocol (sd_notify(3)), for `Type=notify` units.

systemd orders the units that use the pipes (`After=dnpfs@...service`)
after the moment the daemon says it is ready; with `Type=simple` that moment
was the fork, so a service started next could find the mountpoint still an
empty folder.  The protocol is one datagram to the socket named by
$NOTIFY_SOCKET (a path, or "@name" for the abstract namespace), so no
library: libsystemd's own sd_notify is these few lines.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send *state* (e.g. "READY=1") to the service manager, if one asked
    for it; True if sent.  A manager that went away costs one log line, not
    the mount."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(state.encode())
        return True
    except OSError as e:
        log.warning("could not tell the service manager %r: %s", state, e)
        return False

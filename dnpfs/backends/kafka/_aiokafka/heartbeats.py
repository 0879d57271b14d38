"""What a group member learns from its consumer's heartbeats.

aiokafka says nothing when a heartbeat goes unanswered: after a session
timeout without one it marks the coordinator dead and looks for it again,
but keeps the assignment, so a mount cut off from the brokers would go on
handing out what it buffered while another mount takes the group over
(docs/kafka.md, "A mount cut off from the cluster").  ``watch`` wraps the
consumer's coordinator's heartbeat so the member hears of each one the
coordinator answered, with the time it was sent: the broker's session
timer started no earlier.

Leans on ``AIOKafkaConsumer._coordinator`` (made by ``start``) and
``GroupCoordinator._do_heartbeat`` (listed in ``INTERNALS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ....errors import StoreError


def watch(consumer, answered: Callable[[float], None]) -> None:
    """Call *answered(sent)* (``time.monotonic()``) after each heartbeat of
    the started *consumer* that its coordinator answered as from a member."""
    coordinator = getattr(consumer, "_coordinator", None)
    beat = getattr(coordinator, "_do_heartbeat", None)
    if beat is None:
        raise StoreError("aiokafka's consumer has no coordinator heartbeat to watch")

    async def heartbeat():
        sent = time.monotonic()
        ok = await beat()
        if ok:  # also "rebalancing": still a member meanwhile
            answered(sent)
        return ok

    coordinator._do_heartbeat = heartbeat

"""How many records a share reader acquires at once for one reader handle.

A worker that sleeps over each job must get one record at a time: a record
acquired ahead for it waits there while a worker on another mount is idle.
A reader that streams (``cat``) asks for its next record as soon as it has
the last one; one ShareFetch per record made it ~100x slower than a
consumer group (docs/decisions.md, "Work queues on Kafka").  So a handle's
window starts at one record and doubles each time it asks for its next
record right after the previous one (``QUICK``), up to ``MAX_RECORDS`` and
``CAP_BYTES`` worth of records of the size it read last; one slow ask
(a job, ``SLOW``) brings it back to one.  An ask between the two halves it:
a stream's read waits a few ms now and then for the GIL or the CPU (the
machine's other work), and going back to one record a ShareFetch for that
cost the stream more than the hiccup (docs/decisions.md).
"""

from __future__ import annotations

QUICK = 0.005  # an ask this soon after the last record was handed out is streaming
SLOW = 0.05  # ... this late, a job was done in between
MAX_RECORDS = 512
CAP_BYTES = 8 << 20  # as a ShareFetch's FETCH_BYTES: one fetch fills a window


class Window:
    __slots__ = ("size", "given_at", "record_bytes")

    def __init__(self) -> None:
        self.size = 1
        self.given_at: float | None = None  # when the handle got its last record
        self.record_bytes = 0  # the size of that record

    def given(self, now: float, nbytes: int) -> None:
        self.given_at = now
        self.record_bytes = nbytes

    def asked(self, now: float) -> int:
        """The handle asks for its next record at *now*: its new size.  An
        ask again with nothing handed out since (it waited for a record)
        changes nothing."""
        if self.given_at is None:
            return self.size
        gap = now - self.given_at
        if gap <= QUICK:
            cap = min(MAX_RECORDS, max(1, CAP_BYTES // max(self.record_bytes, 1)))
            self.size = min(self.size * 2, cap)
        elif gap <= SLOW:
            self.size = max(1, self.size // 2)
        else:
            self.size = 1
        self.given_at = None  # one doubling per record handed out
        return self.size

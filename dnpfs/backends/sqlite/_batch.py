"""Jobs queued for a loop that takes them all at once (group commit)."""

from __future__ import annotations

import trio


class Batch:
    def __init__(self) -> None:
        self._jobs: list = []
        self._waiting = trio.Event()
        self.closed = False

    def put(self, job) -> None:
        self._jobs.append(job)
        self._waiting.set()

    @property
    def pending(self) -> bool:
        """Jobs are queued that the loop has not taken yet."""
        return bool(self._jobs)

    async def take(self) -> list:
        """Every job queued since the last take; waits for one if none is."""
        while not self._jobs:
            await self._waiting.wait()
            self._waiting = trio.Event()
        jobs, self._jobs = self._jobs, []
        return jobs

    def close(self) -> list:
        """Take no more jobs; returns those still queued."""
        self.closed = True
        jobs, self._jobs = self._jobs, []
        return jobs

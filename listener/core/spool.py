"""The spool's budget: how many bytes all rows in flight may hold on local disk at once."""

from __future__ import annotations

import asyncio


class SpoolBudget:
    """Bytes granted to rows for their files; a row that finds no room waits until another lets go."""

    def __init__(self, limit_bytes: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self._released = asyncio.Event()

    async def acquire(self, wanted: int, *, wait: bool = True) -> int:
        """Waits until `wanted` bytes are free and takes them; returns what was granted.

        No more than the whole budget is ever granted, so a file larger than it still gets
        its turn once the spool is empty. A row that already holds room passes `wait=False`
        for its next files: only rows that hold nothing ever wait, so no row waits for room
        that it, or a row waiting on it, holds.
        """
        if self.limit_bytes is not None:
            wanted = min(wanted, self.limit_bytes)
            while wait and self.used_bytes + wanted > self.limit_bytes:
                self._released.clear()
                await self._released.wait()
        self.used_bytes += wanted
        return wanted

    def release(self, granted: int) -> None:
        """Gives `granted` bytes back and wakes the rows that wait for room."""
        self.used_bytes = max(0, self.used_bytes - granted)
        self._released.set()

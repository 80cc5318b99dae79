"""Progress as the apps see it: an integer that never goes back, written seldom."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

# The AI server's 0..100 maps onto 0..AI_SHARE; fetching and uploading take the rest up to 99.
AI_SHARE = 90
FETCHED = 93
UPLOADED = 99


def from_ai_progress(value: object) -> int:
    """The AI server's float progress (possibly missing or out of range) as 0..90."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    if number != number:  # NaN
        return 0
    return int(max(0.0, min(100.0, number)) * AI_SHARE / 100)


class ProgressReporter:
    """Writes a row's progress only when it rises, and at most once per interval."""

    def __init__(
        self,
        write: Callable[[int], Awaitable[None]],
        *,
        start: int,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self._interval_s = interval_s
        self._clock = clock
        self.written = start
        self.latest = start
        self._last_write_at = float("-inf")

    async def report(self, value: int, *, force: bool = False) -> None:
        """Records `value`; writes it now if it rises past what was written and the interval allows."""
        self.latest = max(self.latest, min(value, 99))
        if self.latest <= self.written:
            return
        now = self._clock()
        if not force and now - self._last_write_at < self._interval_s:
            return
        await self._write(self.latest)
        self.written = self.latest
        self._last_write_at = now

"""Paces each row's lock-screen updates apart from the row: the core's Milestones port.

The row's coroutine only drops a milestone in its feed and goes on; a task per feed sends
the newest one once `gap_s` has passed since the last send ended (Apple throttles Live
Activities updated more often, and a phone needs no more). A milestone that a newer one
overtakes while it waits is never sent. The end goes at once, cutting the wait short, and
nothing follows it. Sends are bounded: a few at a time for the whole replica, each within a
timeout, so a slow FCM or database holds up only the updates, never a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from listener.core.data import ClaimedJob, FinishedRow
from listener.core.milestones import Milestone, Stage
from listener.logs import current_model_id

log = logging.getLogger(__name__)

# Sends under way at once across all rows: the pool's connections and FCM are shared with rows.
MOST_DELIVERING = 4
DELIVERY_TIMEOUT_S = 15.0
# How long a stopping replica lets the ends of rows that just finished go out.
END_GRACE_S = 5.0


@dataclass(frozen=True)
class RowUpdate:
    """One update to tell a row's owner: the row, its milestone, and why it failed if it did."""

    model_id: uuid.UUID
    user_id: uuid.UUID
    model_name: str
    milestone: Milestone
    reason: str | None = None


Deliver = Callable[[RowUpdate], Awaitable[None]]
IsCancelled = Callable[[uuid.UUID], Awaitable[bool]]


class _Feed:
    """What waits to be told of one row, and when it was last told."""

    def __init__(self, model_id: uuid.UUID) -> None:
        self.model_id = model_id
        self.user_id: uuid.UUID | None = None
        self.model_name = ""
        self.progress = 0  # of the newest milestone
        self.pending: RowUpdate | None = None
        self.end: RowUpdate | None = None
        self.maybe_cancelled = False
        self.wake = asyncio.Event()
        self.ending = asyncio.Event()
        self.last_sent_at = float("-inf")
        self.task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self.ending.is_set()


class ProgressFeeds:
    """Per-row feeds of milestones, paced and sent through `deliver`; implements core Milestones."""

    def __init__(
        self,
        deliver: Deliver,
        is_cancelled: IsCancelled,
        *,
        gap_s: float,
        most_delivering: int = MOST_DELIVERING,
        delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deliver = deliver
        self._is_cancelled = is_cancelled
        self.gap_s = gap_s
        self._slots = asyncio.Semaphore(most_delivering)
        self._timeout_s = delivery_timeout_s
        self._clock = clock
        self._feeds: dict[uuid.UUID, _Feed] = {}

    @property
    def rows(self) -> int:
        """Rows with a feed open now (each holds at most one update waiting)."""
        return len(self._feeds)

    def reached(self, job: ClaimedJob, milestone: Milestone) -> None:
        """Keeps `milestone` as the row's newest news; its feed sends it when the gap allows."""
        feed = self._feed(job.model_id)
        if feed.closed:
            return
        feed.user_id, feed.model_name, feed.progress = job.user_id, job.model_name, milestone.progress
        feed.pending = RowUpdate(job.model_id, job.user_id, job.model_name, milestone)
        feed.wake.set()

    def ended(self, model_id: uuid.UUID, finished: FinishedRow | None) -> None:
        """The row ended here: its end goes at once; without a terminal row, only if it was cancelled."""
        if finished is None:
            feed = self._feeds.get(model_id)
            if feed is None or feed.closed or feed.user_id is None:
                return  # nothing was shown from here, or its end is on its way already
            feed.maybe_cancelled = True
            end = RowUpdate(
                model_id, feed.user_id, feed.model_name, Milestone(Stage.CANCELLED, feed.progress)
            )
        else:
            feed = self._feed(model_id)
            if feed.closed:
                return
            completed = finished.status == "completed"
            # A failed row's bar stays where it stopped; a completed one is full.
            milestone = (
                Milestone(Stage.COMPLETED, 100) if completed else Milestone(Stage.FAILED, feed.progress)
            )
            end = RowUpdate(
                model_id, finished.user_id, finished.model_name, milestone, finished.error_message
            )
        feed.end, feed.pending = end, None
        feed.ending.set()
        feed.wake.set()

    async def aclose(self, grace_s: float = END_GRACE_S) -> None:
        """Stops every feed (the replica is stopping): ends under way get `grace_s`, the rest is dropped."""
        ending = [f.task for f in self._feeds.values() if f.task is not None and f.closed]
        if ending:
            await asyncio.wait(ending, timeout=grace_s)
        tasks = [feed.task for feed in self._feeds.values() if feed.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._feeds.clear()

    def _feed(self, model_id: uuid.UUID) -> _Feed:
        feed = self._feeds.get(model_id)
        if feed is None:
            feed = self._feeds[model_id] = _Feed(model_id)
            feed.task = asyncio.get_running_loop().create_task(self._run(feed), name=f"progress-{model_id}")
        return feed

    async def _run(self, feed: _Feed) -> None:
        current_model_id.set(str(feed.model_id))  # this task's own context
        try:
            while True:
                await feed.wake.wait()
                feed.wake.clear()
                if not feed.closed:
                    await self._wait_for_gap(feed)
                update = feed.end if feed.closed else feed.pending
                feed.pending = None
                if update is None:
                    continue
                if update is feed.end and feed.maybe_cancelled and not await self._cancelled(feed):
                    return  # lost or handed back: whoever takes the row up goes on telling
                await self._send(update)
                feed.last_sent_at = self._clock()
                if update is feed.end:
                    return
        finally:
            if self._feeds.get(feed.model_id) is feed:
                del self._feeds[feed.model_id]

    async def _wait_for_gap(self, feed: _Feed) -> None:
        """Waits until `gap_s` after the last send ended; the row's end cuts it short."""
        wait_s = feed.last_sent_at + self.gap_s - self._clock()
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(feed.ending.wait(), wait_s)

    async def _cancelled(self, feed: _Feed) -> bool:
        try:
            async with self._slots, asyncio.timeout(self._timeout_s):  # a database read, bounded alike
                return await self._is_cancelled(feed.model_id)
        except Exception as exc:  # unknown: no end is better than a false one
            log.warning("progress_status_unknown", extra={"error": f"{type(exc).__name__}: {exc}"})
            return False

    async def _send(self, update: RowUpdate) -> None:
        try:
            async with self._slots, asyncio.timeout(self._timeout_s):
                await self._deliver(update)
        except Exception as exc:  # an update lost is only a later one's to catch up
            log.warning(
                "progress_push_failed",
                extra={"stage": update.milestone.stage.value, "error": f"{type(exc).__name__}: {exc}"},
            )

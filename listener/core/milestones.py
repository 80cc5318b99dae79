"""The few moments of a row worth an update on a closed phone's lock screen, and their port.

The row's progress is written every few seconds for the open app (progress.py); a phone
whose app is closed is told far less often: when the generation starts, at each quarter of
the way, when the files are uploaded, and at the end. Which of those reach the phone, and
when, is the business of whoever implements `Milestones` (notify/progress_feeds.py).
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from listener.core.data import ClaimedJob, FinishedRow

log = logging.getLogger(__name__)

# A quarter of the way: 25, 50 and 75 are milestones of the row's 0..99 progress.
MILESTONE_STEP = 25


class Stage(enum.StrEnum):
    """Where a row stands, as a lock-screen update says it."""

    STARTED = "started"
    GENERATING = "generating"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_end(self) -> bool:
        """True for the stages after which the row changes no more."""
        return self in (Stage.COMPLETED, Stage.FAILED, Stage.CANCELLED)


@dataclass(frozen=True)
class Milestone:
    """One moment of a row: its stage and its progress (0..100) then."""

    stage: Stage
    progress: int


class Milestones(Protocol):
    """Where a row's milestones go; each call returns at once and never fails the row."""

    def reached(self, job: ClaimedJob, milestone: Milestone) -> None:
        """The row reached `milestone` while running here."""

    def ended(self, model_id: uuid.UUID, finished: FinishedRow | None) -> None:
        """The row's coroutine ended: with its terminal row, or None (cancelled, lost, handed back)."""


class NoMilestones:
    """Milestones that go nowhere: lock-screen progress is off."""

    def reached(self, job: ClaimedJob, milestone: Milestone) -> None:
        """Drops the milestone."""

    def ended(self, model_id: uuid.UUID, finished: FinishedRow | None) -> None:
        """Drops the end."""


class MilestoneTracker:
    """Turns one row's progress into its milestones: started, each quarter, uploading."""

    def __init__(self, job: ClaimedJob, report: Callable[[ClaimedJob, Milestone], None]) -> None:
        self._job = job
        self._report = report
        # A row taken over from another replica has been announced already up to its progress.
        self._quarter = job.progress // MILESTONE_STEP
        self._started = job.ai_task_id is not None
        self._uploading = False

    def started(self) -> None:
        """The AI server took the request: said once, never for a resumed row."""
        if not self._started:
            self._started = True
            self._tell(Stage.STARTED, self._job.progress)

    def progressed(self, progress: int) -> None:
        """The row's progress rose to `progress`: a milestone when it passes a quarter."""
        quarter = min(progress, 99) // MILESTONE_STEP
        if quarter > self._quarter and not self._uploading:
            self._quarter = quarter
            self._tell(Stage.GENERATING, progress)

    def uploading(self, progress: int) -> None:
        """The files are fetched and being uploaded: said once."""
        if not self._uploading:
            self._uploading = True
            self._tell(Stage.UPLOADING, progress)

    def _tell(self, stage: Stage, progress: int) -> None:
        try:
            self._report(self._job, Milestone(stage, progress))
        except Exception:  # a courtesy to the phone never stops the row
            log.exception("milestone_not_reported", extra={"stage": stage.value})

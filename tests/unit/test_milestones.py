"""What a closed phone's lock screen is told of a row: a few milestones, paced, then the end."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path

from listener.core.data import ClaimedJob, FinishedRow
from listener.core.generation import run_job
from listener.core.milestones import Milestone, MilestoneTracker, Stage
from listener.notify.progress_feeds import ProgressFeeds, RowUpdate
from tests.unit import fakes
from tests.unit.fakes import OWNER, TASK_ID, claimed_job, in_progress, succeeded

SAFETY_S = 5.0  # a safety net against a hung test, never the assertion


class Recorded:
    """A Milestones port that keeps what it was told."""

    def __init__(self) -> None:
        self.milestones: list[Milestone] = []
        self.ends: list[tuple[uuid.UUID, FinishedRow | None]] = []

    def reached(self, job: ClaimedJob, milestone: Milestone) -> None:
        self.milestones.append(milestone)

    def ended(self, model_id: uuid.UUID, finished: FinishedRow | None) -> None:
        self.ends.append((model_id, finished))


def track(job: ClaimedJob) -> tuple[MilestoneTracker, list[Milestone]]:
    told: list[Milestone] = []
    return MilestoneTracker(job, lambda _, m: told.append(m)), told


def test_a_row_says_started_each_quarter_and_uploading_once() -> None:
    tracker, told = track(claimed_job())
    tracker.started()
    tracker.started()
    for progress in (3, 10, 24, 25, 26, 49, 62, 74, 80, 88, 90):
        tracker.progressed(progress)
    tracker.uploading(93)
    tracker.progressed(95)
    tracker.uploading(99)
    assert told == [
        Milestone(Stage.STARTED, 0),
        Milestone(Stage.GENERATING, 25),
        Milestone(Stage.GENERATING, 62),
        Milestone(Stage.GENERATING, 80),
        Milestone(Stage.UPLOADING, 93),
    ]


def test_a_resumed_row_repeats_nothing_its_first_replica_said() -> None:
    tracker, told = track(claimed_job(ai_task_id=TASK_ID, submitted_age_s=1.0, progress=55))
    tracker.started()
    tracker.progressed(60)
    tracker.progressed(76)
    assert told == [Milestone(Stage.GENERATING, 76)]


def test_a_broken_port_never_stops_the_row() -> None:
    def broken(job: ClaimedJob, milestone: Milestone) -> None:
        raise RuntimeError("port down")

    MilestoneTracker(claimed_job(), broken).started()  # logged, not raised


async def test_a_generation_reports_its_milestones_through_the_port(tmp_path: Path) -> None:
    job = claimed_job()
    store = fakes.FakeJobStore()
    store.add(job, owner=OWNER)
    ai = fakes.FakeModelServer(
        [in_progress(10), in_progress(40), in_progress(70), in_progress(95), succeeded()]
    )
    recorded = Recorded()
    clients = dataclasses.replace(fakes.clients(store, ai), milestones=recorded)
    outcome = await asyncio.wait_for(
        run_job(job, clients, fakes.generation_settings(tmp_path, progress_interval_s=0)), SAFETY_S
    )
    assert outcome.outcome == "completed"
    # The AI server's 40, 70 and 95 % are the row's 36, 63 and 85 %.
    assert [(m.stage.value, m.progress) for m in recorded.milestones] == [
        ("started", 0),
        ("generating", 36),
        ("generating", 63),
        ("generating", 85),
        ("uploading", 93),
    ]


# -- pacing -------------------------------------------------------------------------------

GAP_S = 0.2


class Phone:
    """A deliver that records what it sent and when (monotonic), and can be slowed down."""

    def __init__(self, cancelled: bool = False) -> None:
        self.sent: list[tuple[float, RowUpdate]] = []
        self.cancelled = cancelled
        self.asked: list[uuid.UUID] = []
        self.arrived = asyncio.Event()

    async def deliver(self, update: RowUpdate) -> None:
        self.sent.append((time.monotonic(), update))
        self.arrived.set()

    async def is_cancelled(self, model_id: uuid.UUID) -> bool:
        self.asked.append(model_id)
        return self.cancelled

    def stages(self) -> list[str]:
        return [f"{u.milestone.stage.value} {u.milestone.progress}" for _, u in self.sent]

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(SAFETY_S):
            while len(self.sent) < count:
                self.arrived.clear()
                await self.arrived.wait()


def finished(job: ClaimedJob, status: str = "completed", reason: str | None = None) -> FinishedRow:
    return FinishedRow(job.model_id, job.user_id, job.model_name, status, reason)


async def test_updates_keep_the_gap_an_overtaken_one_is_dropped_and_the_end_goes_at_once() -> None:
    phone = Phone()
    feeds = ProgressFeeds(phone.deliver, phone.is_cancelled, gap_s=GAP_S)
    job = claimed_job()
    feeds.reached(job, Milestone(Stage.STARTED, 0))
    await phone.wait_for(1)
    # Both inside the gap: only the newer one is sent, once the gap has passed.
    feeds.reached(job, Milestone(Stage.GENERATING, 26))
    feeds.reached(job, Milestone(Stage.GENERATING, 52))
    await phone.wait_for(2)
    feeds.reached(job, Milestone(Stage.UPLOADING, 93))
    feeds.ended(job.model_id, finished(job))  # overtakes the upload still waiting for its gap
    await phone.wait_for(3)
    await asyncio.sleep(GAP_S)  # the upload overtaken by the end never follows it
    assert phone.stages() == ["started 0", "generating 52", "completed 100"]
    times = [at for at, _ in phone.sent]
    assert times[1] - times[0] >= GAP_S
    assert feeds.rows == 0
    await feeds.aclose()


async def test_a_row_that_stops_here_ends_as_cancelled_only_if_its_owner_cancelled_it() -> None:
    for cancelled in (True, False):
        phone = Phone(cancelled=cancelled)
        feeds = ProgressFeeds(phone.deliver, phone.is_cancelled, gap_s=GAP_S)
        job = claimed_job()
        feeds.reached(job, Milestone(Stage.GENERATING, 30))
        await phone.wait_for(1)
        feeds.ended(job.model_id, None)
        feeds.ended(uuid.uuid4(), None)  # a row that told nothing from here is not looked up
        await feeds.aclose(grace_s=SAFETY_S)  # lets the end under way finish
        expected = ["generating 30", "cancelled 30"] if cancelled else ["generating 30"]
        assert (phone.stages(), phone.asked) == (expected, [job.model_id])


async def test_a_failed_row_ends_where_its_bar_stopped_with_its_reason() -> None:
    phone = Phone()
    feeds = ProgressFeeds(phone.deliver, phone.is_cancelled, gap_s=GAP_S)
    job = claimed_job()
    feeds.reached(job, Milestone(Stage.GENERATING, 51))
    feeds.ended(job.model_id, finished(job, "failed", "The prompt was rejected by the content filter."))
    await phone.wait_for(1)
    await asyncio.sleep(0.05)
    [(_, end)] = phone.sent  # the waiting update was overtaken by the end
    assert (end.milestone, end.reason) == (
        Milestone(Stage.FAILED, 51),
        "The prompt was rejected by the content filter.",
    )
    await feeds.aclose()


async def test_a_slow_phone_never_holds_a_row_up() -> None:
    """reached() and ended() only fill the row's slot: plain calls, never awaited by the row."""
    release = asyncio.Event()

    async def stuck(update: RowUpdate) -> None:
        await release.wait()

    feeds = ProgressFeeds(stuck, Phone().is_cancelled, gap_s=GAP_S, delivery_timeout_s=0.1)
    jobs = [claimed_job() for _ in range(20)]
    for job in jobs:
        feeds.reached(job, Milestone(Stage.STARTED, 0))
        feeds.ended(job.model_id, finished(job))
    assert feeds.rows == 20
    await feeds.aclose(grace_s=0)
    assert feeds.rows == 0

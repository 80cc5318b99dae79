"""The supervisor: claims within capacity, one coroutine per row, leases kept, pushes sent once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from listener.core.data import ClaimedJob, CompletedColumns, Ending, FinishedRow, JobOutcome
from listener.core.milestones import Milestone
from listener.core.supervisor import (
    REQUESTS_KEPT_DAYS,
    REQUESTS_PRUNED_PER_SWEEP,
    Notify,
    Supervisor,
    SupervisorSettings,
)
from listener.errors import FailureKind, TransientError
from listener.metrics import Metrics
from tests.unit.fakes import OWNER, FakeJobStore, FakeWakeUps, claimed_job

SAFETY_S = 2.0
RESULTS = CompletedColumns(
    "u/generated-models/m.glb", "https://example/m.glb", 2048, None, None, None, None, {}
)


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Lets the event loop run until `predicate` holds (at most about two seconds)."""
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


async def settle() -> None:
    """Lets every callback that is ready run, to check that something did not happen."""
    for _ in range(5):
        await asyncio.sleep(0.002)


class FakeRunner:
    """A run_job whose rows run until the test says how they end."""

    def __init__(self, store: FakeJobStore) -> None:
        self.store = store
        self.started: list[uuid.UUID] = []
        self.cancelled: list[uuid.UUID] = []
        self.running: set[uuid.UUID] = set()
        self.most_running = 0
        self._ends: dict[uuid.UUID, asyncio.Future[str | BaseException]] = {}

    def _end(self, model_id: uuid.UUID) -> asyncio.Future[str | BaseException]:
        return self._ends.setdefault(model_id, asyncio.get_running_loop().create_future())

    def finish(self, model_id: uuid.UUID, outcome: str | BaseException = "completed") -> None:
        self._end(model_id).set_result(outcome)

    async def __call__(self, job: ClaimedJob) -> JobOutcome:
        self.started.append(job.model_id)
        self.running.add(job.model_id)
        self.most_running = max(self.most_running, len(self.running))
        try:
            outcome = await self._end(job.model_id)
        except asyncio.CancelledError:
            self.cancelled.append(job.model_id)
            raise
        finally:
            self.running.discard(job.model_id)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "completed":
            return JobOutcome(Ending(outcome), await self.store.complete(job.model_id, OWNER, RESULTS))
        if outcome == "failed":
            finished = await self.store.fail(job.model_id, OWNER, "The prompt is empty.", {})
            return JobOutcome(Ending(outcome), finished, FailureKind.VALIDATE)
        return JobOutcome(Ending(outcome))


class EndsSeen:
    """The milestones port, as far as the supervisor uses it: how each row's coroutine ended."""

    def __init__(self) -> None:
        self.ends: list[tuple[uuid.UUID, str | None]] = []

    def reached(self, job: ClaimedJob, milestone: Milestone) -> None:
        raise AssertionError("the supervisor reports no milestone of its own")

    def ended(self, model_id: uuid.UUID, finished: FinishedRow | None) -> None:
        self.ends.append((model_id, finished.status if finished else None))


@dataclass
class Harness:
    """A started supervisor and the fakes around it."""

    supervisor: Supervisor
    store: FakeJobStore
    source: FakeWakeUps
    runner: FakeRunner
    metrics: Metrics
    notified: list[FinishedRow] = field(default_factory=list)
    stopped: bool = False
    ends: EndsSeen = field(default_factory=EndsSeen)

    def add(self, count: int = 1, **overrides: Any) -> list[ClaimedJob]:
        return [self.store.add(claimed_job(**overrides)) for _ in range(count)]

    async def running(self, count: int) -> list[uuid.UUID]:
        await eventually(lambda: len(self.runner.running) == count, f"{count} rows running")
        return sorted(self.runner.running, key=self.runner.started.index)

    async def stop(self) -> None:
        self.stopped = True
        await asyncio.wait_for(self.supervisor.stop(), SAFETY_S)


@contextlib.asynccontextmanager
async def supervising(
    push_s: float = 0.0,
    store: FakeJobStore | None = None,
    more_tellers: Sequence[Notify] = (),
    **settings: Any,
) -> AsyncIterator[Harness]:
    store, source, metrics = store or FakeJobStore(), FakeWakeUps(), Metrics()
    runner = FakeRunner(store)
    ends = EndsSeen()
    fields = {
        "owner": OWNER,
        "concurrency": 4,
        "per_user_limit": 10,
        "lease_s": 60.0,
        "sweep_interval_s": 60.0,
    }
    supervisor = Supervisor(
        leases=store,
        wake_ups=source,
        settings=SupervisorSettings(**{**fields, **settings}),
        run_job=runner,
        notify=[lambda finished: push(finished), *more_tellers],
        metrics=metrics,
        milestones=ends,
    )
    harness = Harness(supervisor, store, source, runner, metrics, ends=ends)

    async def push(finished: FinishedRow) -> None:
        await asyncio.sleep(push_s)
        harness.notified.append(finished)

    await supervisor.start()
    try:
        await asyncio.wait_for(source.running.wait(), SAFETY_S)
        yield harness
    finally:
        if not harness.stopped:
            await harness.stop()


# -- waking up and claiming ---------------------------------------------------------------


async def test_a_job_notification_wakes_a_claim_and_the_row_runs() -> None:
    async with supervising() as h:
        [job] = h.add()
        await settle()
        assert h.store.claims == [] and h.runner.started == []
        h.source.job(job.model_id)
        assert await h.running(1) == [job.model_id]


async def test_no_row_is_claimed_while_the_ai_server_is_away_and_claims_resume_when_it_is_back() -> None:
    async with supervising() as h:
        h.supervisor.claim_gate.set_problem("the AI server at 127.0.0.1:7000 refuses connections")
        [job] = h.add()
        h.source.job(job.model_id)
        await settle()
        assert h.store.claims == [] and h.runner.started == []  # the row waits, pending
        h.supervisor.claim_gate.set_problem(None)
        assert await h.running(1) == [job.model_id]


async def test_a_connect_triggers_a_claim() -> None:
    async with supervising() as h:
        [job] = h.add()
        h.source.connect()
        assert await h.running(1) == [job.model_id]


async def test_the_sweep_claims_rows_whose_notification_was_missed() -> None:
    async with supervising(sweep_interval_s=0.01) as h:
        [job] = h.add()
        assert await h.running(1) == [job.model_id]


async def test_the_sweep_looks_again_as_soon_as_the_next_lease_runs_out() -> None:
    """A sweep interval of an hour, but a lease that runs out at once: the sweep does not wait."""
    store = FakeJobStore()
    store.next_expiry_s = 0.0
    async with supervising(sweep_interval_s=3600.0, store=store) as h:
        await eventually(lambda: h.store.sweeps >= 3, "three sweeps")


async def test_every_sweep_prunes_the_daily_budgets_memory_older_than_it_keeps() -> None:
    async with supervising(sweep_interval_s=0.01) as h:
        await eventually(lambda: len(h.store.forget_calls) >= 2, "two prunes")
        assert set(h.store.forget_calls) == {(REQUESTS_KEPT_DAYS, REQUESTS_PRUNED_PER_SWEEP)}
        assert REQUESTS_KEPT_DAYS >= 1  # the daily limit looks back a day: never forget sooner


async def test_the_first_sweep_at_start_wakes_the_claim_loop_only_if_it_freed_rows() -> None:
    async with supervising(sweep_interval_s=3600.0) as h:
        [job] = h.add()
        await eventually(lambda: h.store.sweeps == 1, "the sweep at start")
        await settle()
        assert h.store.claims == []  # nothing was handed back: the look after connecting claims
        h.source.connect()
        assert await h.running(1) == [job.model_id]


async def test_a_row_claimed_again_while_running_does_not_start_a_second_coroutine() -> None:
    async with supervising() as h:
        [job] = h.add()
        h.source.connect()
        await h.running(1)
        h.store.expire(job.model_id)  # the lease ran out while the database was away
        h.source.job(job.model_id)
        await eventually(lambda: h.store.row(job.model_id).attempts == 2, "the row claimed again")
        await settle()
        assert h.runner.started == [job.model_id]
        assert list(h.supervisor.running) == [job.model_id]


async def test_never_more_rows_run_than_the_concurrency_and_more_are_claimed_as_rows_finish() -> None:
    async with supervising(concurrency=2) as h:
        jobs = h.add(5)
        h.source.connect()
        await h.running(2)
        await settle()
        assert len(h.runner.started) == 2
        for i in range(5):
            await eventually(functools.partial(lambda i: len(h.runner.started) > i, i), f"row {i} started")
            h.runner.finish(h.runner.started[i])
        await eventually(lambda: len(h.notified) == 5, "every row finished")
        assert sorted(h.runner.started) == sorted(job.model_id for job in jobs)
        assert h.runner.most_running == 2
        assert all(slots <= 2 for _, slots, _, _ in h.store.claims)


async def test_a_job_notification_without_a_free_slot_claims_nothing_until_a_row_finishes() -> None:
    async with supervising(concurrency=1) as h:
        first, second = h.add(2)
        h.source.connect()
        await h.running(1)
        claims = len(h.store.claims)
        h.source.job(second.model_id)
        await settle()
        assert len(h.store.claims) == claims
        h.runner.finish(first.model_id)
        await eventually(lambda: h.runner.started == [first.model_id, second.model_id], "the second row runs")


async def test_a_claim_asks_for_the_free_slots_with_the_per_user_limit() -> None:
    async with supervising(concurrency=3, per_user_limit=1, lease_s=45.0) as h:
        user, other = uuid.uuid4(), uuid.uuid4()
        h.add(3, user_id=user)
        h.add(1, user_id=other)
        h.source.connect()
        await h.running(2)
        assert h.store.claims[0] == (OWNER, 3, 1, 45.0)
        assert {h.store.row(m).job.user_id for m in h.runner.running} == {user, other}


async def test_claim_errors_do_not_kill_the_claim_loop() -> None:
    async with supervising() as h:
        h.store.claim_errors = [TransientError("connection reset"), TransientError("connection reset")]
        [job] = h.add()
        h.source.connect()
        await eventually(lambda: len(h.store.claims) == 1, "a claim failed")
        h.source.job(job.model_id)
        await eventually(lambda: len(h.store.claims) == 2, "another claim failed")
        await settle()
        assert h.runner.started == [] and h.supervisor.healthy
        h.source.job(job.model_id)
        assert await h.running(1) == [job.model_id]


async def test_an_unexpected_claim_error_does_not_make_the_supervisor_unhealthy() -> None:
    async with supervising() as h:
        h.store.claim_errors = [RuntimeError("a bug in the claim")]
        h.source.connect()
        await eventually(lambda: len(h.store.claims) == 1, "the claim was tried")
        await settle()
        assert h.supervisor.healthy


# -- stopping and leases ------------------------------------------------------------------


async def test_stop_cancels_running_rows_and_hands_the_leases_back() -> None:
    async with supervising() as h:
        jobs = h.add(2)
        h.source.connect()
        await h.running(2)
        await h.stop()
        assert sorted(h.runner.cancelled) == sorted(job.model_id for job in jobs)
        assert h.store.released_owners == [OWNER]
        assert all(h.store.row(job.model_id).owner is None for job in jobs)
        assert h.supervisor.running == {} and h.notified == []


async def test_every_way_of_telling_the_owner_is_told_and_a_slow_one_holds_up_no_other() -> None:
    stuck = asyncio.Event()
    webhook: list[uuid.UUID] = []

    async def slow_mail(finished: FinishedRow) -> None:
        await stuck.wait()

    async def fast_webhook(finished: FinishedRow) -> None:
        webhook.append(finished.model_id)

    async with supervising(more_tellers=[slow_mail, fast_webhook]) as h:
        [job] = h.add()
        h.source.job(job.model_id)
        await h.running(1)
        h.runner.finish(job.model_id)
        await eventually(lambda: webhook == [job.model_id] and len(h.notified) == 1, "both told")
        stuck.set()


async def test_stop_lets_a_push_under_way_finish() -> None:
    async with supervising(push_s=0.05) as h:
        [job] = h.add()
        h.source.connect()
        await h.running(1)
        h.runner.finish(job.model_id)
        await eventually(lambda: bool(h.supervisor.pushing), "the push started")
        await h.stop()
        assert [finished.model_id for finished in h.notified] == [job.model_id]


async def test_a_row_whose_lease_is_no_longer_renewed_is_cancelled() -> None:
    async with supervising(lease_s=0.03) as h:
        lost, kept = h.add(2)
        h.source.connect()
        await h.running(2)
        h.store.lose(lost.model_id)
        await eventually(lambda: h.runner.cancelled == [lost.model_id], "the lost row cancelled")
        renewals = len(h.store.renewals)
        await eventually(lambda: len(h.store.renewals) >= renewals + 2, "two more renewals")
        assert h.runner.running == {kept.model_id}
        assert h.notified == []


async def test_every_row_that_ends_here_ends_its_lock_screen_updates_with_how_it_ended() -> None:
    async with supervising() as h:
        completed, failed, cancelled = h.add(3)
        h.source.connect()
        await h.running(3)
        h.runner.finish(completed.model_id)
        h.runner.finish(failed.model_id, "failed")
        h.store.lose(cancelled.model_id)
        h.source.cancel(cancelled.model_id)
        await eventually(lambda: len(h.ends.ends) == 3, "three rows ended")
        assert set(h.ends.ends) == {
            (completed.model_id, "completed"),
            (failed.model_id, "failed"),
            (cancelled.model_id, None),  # the feed asks the row whether its owner cancelled it
        }


async def test_a_cancel_notification_checks_the_leases_at_once() -> None:
    async with supervising() as h:
        job, other = h.add(2)
        h.source.connect()
        await h.running(2)
        h.source.cancel("not-a-uuid")
        h.source.cancel(uuid.uuid4())
        await settle()
        assert h.store.renewals == []
        h.store.lose(job.model_id)
        h.source.cancel(job.model_id)
        await eventually(lambda: h.runner.cancelled == [job.model_id], "the cancelled row stopped")
        assert h.runner.running == {other.model_id}


async def test_a_reconnect_looks_for_cancels_it_missed_and_is_counted() -> None:
    async with supervising() as h:
        [job] = h.add()
        h.source.connect()
        await h.running(1)
        h.store.lose(job.model_id)
        h.source.connect()
        await eventually(lambda: h.runner.cancelled == [job.model_id], "the cancelled row stopped")
        assert h.metrics.registry.get_sample_value("listener_listen_reconnects_total") == 1


async def test_a_renewal_that_fails_stops_no_row_and_is_tried_again() -> None:
    async with supervising(lease_s=0.03) as h:
        h.add(2)
        h.source.connect()
        await h.running(2)
        h.store.unavailable = {"renew_leases"}
        renewals = len(h.store.renewals)
        await eventually(lambda: len(h.store.renewals) >= renewals + 3, "three failed renewals")
        assert h.runner.cancelled == [] and len(h.runner.running) == 2
        assert h.supervisor.healthy


# -- telling the owner --------------------------------------------------------------------


@pytest.mark.parametrize(("outcome", "status"), [("completed", "completed"), ("failed", "failed")])
async def test_a_finished_row_is_handed_to_notify_exactly_once(outcome: str, status: str) -> None:
    async with supervising() as h:
        [job] = h.add()
        h.source.connect()
        await h.running(1)
        h.runner.finish(job.model_id, outcome)
        await eventually(lambda: bool(h.notified), "the owner told")
        await settle()
        assert [(f.model_id, f.status) for f in h.notified] == [(job.model_id, status)]


@pytest.mark.parametrize("outcome", ["lost", "released", RuntimeError("a bug in the row")])
async def test_a_row_that_did_not_finish_is_not_notified_and_frees_its_slot(
    outcome: str | BaseException,
) -> None:
    async with supervising(concurrency=1) as h:
        first, second = h.add(2)
        h.source.connect()
        await h.running(1)
        h.runner.finish(first.model_id, outcome)
        await eventually(lambda: second.model_id in h.runner.running, "the next row claimed")
        await settle()
        assert h.notified == []


async def test_rows_given_up_by_the_sweep_are_handed_to_notify() -> None:
    async with supervising(sweep_interval_s=0.01) as h:
        given_up = FinishedRow(uuid.uuid4(), uuid.uuid4(), "Vase", "failed", "The listener gave up.")
        h.store.given_up = [given_up]
        await eventually(lambda: bool(h.notified), "the owner told")
        await settle()
        assert h.notified == [given_up]


# -- health -------------------------------------------------------------------------------


async def test_a_background_loop_that_dies_makes_the_supervisor_unhealthy() -> None:
    async with supervising() as h:
        await settle()
        assert h.supervisor.healthy
        h.source.die(RuntimeError("the listen loop crashed"))
        await eventually(lambda: not h.supervisor.healthy, "unhealthy")

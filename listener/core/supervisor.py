"""Claims rows as capacity allows and runs one supervised coroutine per row."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from listener.core.availability import Availability
from listener.core.data import ClaimedJob, Ending, FinishedRow, JobOutcome
from listener.core.milestones import Milestones, NoMilestones
from listener.core.ports import LeaseStore, WakeUpSource
from listener.errors import FailureKind, TransientError
from listener.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupervisorSettings:
    """Who this replica is, how much it takes on, and how long its leases last."""

    owner: str
    concurrency: int
    per_user_limit: int
    lease_s: float
    # Looks for claimable rows this often even without a notification (and sooner when a
    # lease runs out before then).
    sweep_interval_s: float = 5.0


JobRunner = Callable[[ClaimedJob], Coroutine[Any, Any, JobOutcome]]
Notify = Callable[[FinishedRow], Coroutine[Any, Any, None]]
# How long a stopping replica lets pushes that are under way finish.
PUSH_GRACE_S = 10.0
# Most rows claimed by one statement: a backlog is taken in short statements, not one long one.
CLAIM_BATCH = 100
# Claims after which a job that never finished (its replica died each time) is failed.
MAX_CLAIMS = 8
# Days the daily budget's memory of requests is kept (the limit itself looks back 24 hours),
# and most of them pruned per sweep: small deletes that never hold the app's inserts up.
REQUESTS_KEPT_DAYS = 30
REQUESTS_PRUNED_PER_SWEEP = 500
# Least time between sweeps, however soon the next lease runs out.
MIN_SWEEP_GAP_S = 0.2
# Pause after an unexpected error in a background loop, so that it cannot spin.
LOOP_ERROR_PAUSE_S = 1.0


class Supervisor:
    """The claim loop, the lease renewer and the dict of running rows, stopped as one."""

    def __init__(
        self,
        leases: LeaseStore,
        wake_ups: WakeUpSource,
        settings: SupervisorSettings,
        run_job: JobRunner,
        notify: Notify | Sequence[Notify],
        metrics: Metrics,
        claim_gate: Availability | None = None,
        milestones: Milestones | None = None,
    ) -> None:
        self.leases = leases
        self.wake_ups = wake_ups
        self.settings = settings
        # While it is unusable (the AI server cannot take submissions), rows wait unclaimed.
        self.claim_gate = claim_gate or Availability()
        self.run_job = run_job
        # Every way the owner is told that a row ended (the push today; mail or a webhook
        # tomorrow), each on a task of its own so that a slow one holds up no other.
        self.tellers: tuple[Notify, ...] = (notify,) if callable(notify) else tuple(notify)
        self.metrics = metrics
        # Told when each row's coroutine ends, so that its lock-screen updates end with it.
        self.milestones = milestones or NoMilestones()
        self.running: dict[uuid.UUID, asyncio.Task[JobOutcome]] = {}
        # When each running row was claimed (monotonic), and how long it had queued by then.
        self._claimed: dict[uuid.UUID, tuple[float, float]] = {}
        self._connected_before = False
        # Pushes run apart from the rows' coroutines: cancelling a row never cuts one short.
        self.pushing: set[asyncio.Task[None]] = set()
        # Lease checks started by a notification or a reconnect, kept until they finish.
        self._checks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []

    @property
    def free_slots(self) -> int:
        """How many more rows this replica may take on now."""
        return self.settings.concurrency - len(self.running)

    async def start(self) -> None:
        """Starts listening, claiming, sweeping and renewing."""
        self._loops = [
            asyncio.create_task(self.wake_ups.run(self), name="listen"),
            asyncio.create_task(self._claim_loop(), name="claim"),
            asyncio.create_task(self._sweep_loop(), name="sweep"),
            asyncio.create_task(self._renew_loop(), name="renew"),
        ]
        for loop in self._loops:
            loop.add_done_callback(self._loop_ended)

    @property
    def healthy(self) -> bool:
        """False once a background loop has ended while the replica is not stopping."""
        return self._stopping or not any(loop.done() for loop in self._loops)

    def _loop_ended(self, loop: asyncio.Task[None]) -> None:
        if not self._stopping and not loop.cancelled():
            log.error("loop_ended", extra={"loop": loop.get_name()}, exc_info=loop.exception())

    async def stop(self) -> None:
        """Stops claiming, cancels every row's coroutine and hands the leases back at once."""
        self._stopping = True
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("job_stopped_with_error", exc_info=result)
        if self.pushing:
            await asyncio.wait(self.pushing, timeout=PUSH_GRACE_S)
        try:
            released = await self.leases.release_leases(self.settings.owner)
            log.info("leases_released", extra={"count": released})
        except TransientError as exc:
            log.warning("leases_not_released", extra={"error": str(exc)})

    # -- wake-ups -----------------------------------------------------------------------

    def on_job(self, payload: str) -> None:
        """A row may be claimable: wake the claim loop if a slot is free."""
        # Only a hint: the claim reads the truth from the table. No slot, no wake-up.
        if self.free_slots > 0:
            self._wake.set()

    def on_cancel(self, payload: str) -> None:
        """A row may have been cancelled: check the leases if it runs here."""
        # Only a hint too: the lease check reads the job and stops the row if it was cancelled.
        try:
            model_id = uuid.UUID(payload)
        except ValueError:
            return
        if model_id in self.running:
            log.info("job_cancel_heard", extra={"model_id": str(model_id)})
            self._check_leases()

    def on_connect(self) -> None:
        """The wake-up source (re)connected: look for work and for cancels it may have missed."""
        # Notifications sent while disconnected are lost: look for work, and for cancels.
        if self._connected_before:
            self.metrics.reconnects.inc()
        self._connected_before = True
        self._wake.set()
        if self.running:
            self._check_leases()

    def _check_leases(self) -> None:
        check = asyncio.get_running_loop().create_task(self._renew_once())
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    # -- loops --------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if not self.claim_gate.usable:
                log.warning("claims_paused", extra={"reason": self.claim_gate.problem})
                await self.claim_gate.wait_usable()
                log.info("claims_resumed")
            while self.free_slots > 0 and not self._stopping:
                asked = min(self.free_slots, CLAIM_BATCH)
                try:
                    jobs = await self.leases.claim(
                        self.settings.owner,
                        asked,
                        self.settings.per_user_limit,
                        self.settings.lease_s,
                        MAX_CLAIMS,
                    )
                except TransientError as exc:
                    log.warning("claim_failed", extra={"error": str(exc)})
                    break
                except Exception:
                    log.exception("claim_failed")
                    await asyncio.sleep(LOOP_ERROR_PAUSE_S)
                    break
                for job in jobs:
                    self._start(job)
                if len(jobs) < asked:
                    break

    def _start(self, job: ClaimedJob) -> None:
        if job.model_id in self.running:
            # Its lease had run out while it was still running here (the database was away):
            # the claim renewed it, and the coroutine goes on. Never two coroutines for a row.
            log.warning("job_reclaimed_while_running", extra={"model_id": str(job.model_id)})
            return
        log.info(
            "job_claimed",
            extra={
                "model_id": str(job.model_id),
                "attempt": job.attempts,
                "queued_s": round(job.queued_s, 4),
            },
        )
        self.metrics.rows_claimed.inc()
        if job.attempts == 1:
            self.metrics.claim_latency.observe(job.queued_s)
        task = asyncio.create_task(self.run_job(job), name=f"job-{job.model_id}")
        self.running[job.model_id] = task
        self._claimed[job.model_id] = (time.monotonic(), job.queued_s)
        self.metrics.rows_in_flight.set(len(self.running))
        task.add_done_callback(functools.partial(self._finished, job.model_id))

    def _finished(self, model_id: uuid.UUID, task: asyncio.Task[JobOutcome]) -> None:
        self.running.pop(model_id, None)
        claimed_at, queued_s = self._claimed.pop(model_id, (time.monotonic(), 0.0))
        self.metrics.rows_in_flight.set(len(self.running))
        finished = task.result().finished if not task.cancelled() and task.exception() is None else None
        self._end_milestones(model_id, finished)
        if task.cancelled():
            if not self._stopping:
                self.metrics.rows_cancelled.inc()
        elif task.exception() is not None:
            log.error("job_crashed", extra={"model_id": str(model_id)}, exc_info=task.exception())
        else:
            result = task.result()
            if result.outcome is Ending.COMPLETED:
                self.metrics.rows_completed.inc()
            elif result.outcome is Ending.FAILED:
                self.metrics.rows_failed.labels(result.failure_kind or "other").inc()
            if result.finished is not None:
                self.metrics.end_to_end.observe(queued_s + time.monotonic() - claimed_at)
                self._tell_owner(result.finished)
        if not self._stopping:
            self._wake.set()

    def _end_milestones(self, model_id: uuid.UUID, finished: FinishedRow | None) -> None:
        try:
            self.milestones.ended(model_id, finished)
        except Exception:  # the lock screen's news never stops the supervisor
            log.exception("milestones_not_ended", extra={"model_id": str(model_id)})

    def _tell_owner(self, finished: FinishedRow) -> None:
        for tell in self.tellers:
            telling = asyncio.create_task(tell(finished), name=f"tell-{finished.model_id}")
            self.pushing.add(telling)
            telling.add_done_callback(self.pushing.discard)

    async def _sweep_loop(self) -> None:
        """Gives up, hands back expired leases, prunes old requests, then looks for claimable rows.

        At start, then every sweep interval, or as soon as the next lease held runs out if
        that is sooner: the rows of a replica that died wait for another no longer than
        their lease.
        """
        wait_s, at_start = 0.0, True
        while True:
            await asyncio.sleep(wait_s)
            wait_s, found = self.settings.sweep_interval_s, 0
            try:
                for finished in await self.leases.give_up_jobs(MAX_CLAIMS):
                    log.warning("job_given_up", extra={"model_id": str(finished.model_id)})
                    self.metrics.rows_failed.labels(FailureKind.GIVEN_UP).inc()
                    self._end_milestones(finished.model_id, finished)
                    self._tell_owner(finished)
                    found += 1
                expired = await self.leases.release_expired_leases()
                if expired.released:
                    log.info("expired_leases_released", extra={"count": expired.released})
                    found += expired.released
                if expired.next_expiry_s is not None:
                    wait_s = min(wait_s, max(expired.next_expiry_s, MIN_SWEEP_GAP_S))
                await self.leases.forget_old_requests(REQUESTS_KEPT_DAYS, REQUESTS_PRUNED_PER_SWEEP)
            except Exception as exc:
                log.warning("sweep_failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            if found or not at_start:  # at start, the first look after connecting claims anyway
                self._wake.set()
            at_start = False

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            await self._renew_once()

    async def _renew_once(self) -> None:
        """Extends the leases of running rows; a row that is no longer ours is stopped."""
        ids = list(self.running)
        try:
            alive = await self.leases.renew_leases(self.settings.owner, ids, self.settings.lease_s)
        except Exception as exc:  # never let the renewer die: the next round tries again
            log.warning("lease_renewal_failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        for model_id in ids:
            task = self.running.get(model_id)
            if model_id not in alive and task is not None:
                log.info("job_lease_lost", extra={"model_id": str(model_id)})
                task.cancel()

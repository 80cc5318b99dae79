"""One row's life, from claimed to completed or failed. It sees its clients only as Protocols."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from listener.core.data import (
    ClaimedJob,
    CompletedColumns,
    Ending,
    FinishedRow,
    ImageFile,
    JobOutcome,
    TaskState,
)
from listener.core.milestones import MilestoneTracker
from listener.core.ports import GenerationSettings, JobStore, RowDependencies
from listener.core.progress import FETCHED, UPLOADED, ProgressReporter, from_ai_progress
from listener.core.results import ResultFiles
from listener.core.validation import SourceImage, ValidRequest, validate
from listener.errors import (
    AIServerUnreachable,
    DatabaseUnavailable,
    FailureKind,
    FileGone,
    LeaseLost,
    PermanentError,
    TransientError,
    UnknownTask,
)
from listener.logs import current_model_id
from listener.retry import RetryPolicy

log = logging.getLogger(__name__)

MAX_SOURCE_IMAGE_BYTES = 20 * 1024 * 1024
# How long a cancelled row waits for a submission under way to answer and be recorded.
SUBMIT_GRACE_S = 30.0
# How often the id of a generation just started is offered again to a database that is away.
RECORD_RETRY_S = 1.0
# How long a stopped row may take to remove its uploads when no replica will complete it.
DISCARD_GRACE_S = 10.0


async def run_job(job: ClaimedJob, clients: RowDependencies, settings: GenerationSettings) -> JobOutcome:
    """Runs the row to its terminal status; the caller tells the user about `finished`."""
    token = current_model_id.set(str(job.model_id))
    spool = settings.spool_dir / str(job.model_id)
    generation = Generation(job, clients, settings, spool)
    try:
        finished = await generation.run()
        if finished is None:  # no longer ours as it ended: cancelled by its owner, perhaps
            await generation.discard_if_abandoned()
    except LeaseLost:
        log.info("job_lost")
        await generation.discard_if_abandoned()
        return JobOutcome(Ending.LOST)
    except asyncio.CancelledError:
        # Stopped from outside: cancelled by its owner, its lease lost, or the replica stopping.
        await _seen_through(generation.discard_if_abandoned())
        raise
    except DatabaseUnavailable:
        log.warning("job_released_database_unavailable")
        await _release_quietly(clients.db, job.model_id, settings.owner)
        return JobOutcome(Ending.RELEASED)
    except AIServerUnreachable as exc:
        log.warning("job_released_ai_server_unreachable", extra={"error": str(exc)})
        await _release_quietly(clients.db, job.model_id, settings.owner)
        return JobOutcome(Ending.RELEASED)
    except PermanentError as exc:
        generation.failure_kind = exc.kind or generation.step
        finished = await generation.fail(str(exc))
    except Exception:
        log.exception("job_crashed")
        generation.failure_kind = FailureKind.INTERNAL
        finished = await generation.fail("The listener hit an unexpected error and stopped this generation.")
    finally:
        shutil.rmtree(spool, ignore_errors=True)
        generation.results.release()
        current_model_id.reset(token)
    if finished is None:
        return JobOutcome(Ending.LOST)
    return JobOutcome(Ending(finished.status), finished, generation.failure_kind)


async def _seen_through(work: Coroutine[Any, Any, None]) -> None:
    """Runs `work` for up to DISCARD_GRACE_S although the caller is being cancelled."""
    task = asyncio.ensure_future(work)
    await asyncio.wait([task], timeout=DISCARD_GRACE_S)
    if not task.done():
        task.cancel()


async def _release_quietly(db: JobStore, model_id: uuid.UUID, owner: str) -> None:
    with contextlib.suppress(TransientError):  # if it cannot be handed back, the lease expires
        await db.release_lease(model_id, owner)


class Generation:
    """The steps of one row: validate, submit, poll, fetch, upload, complete."""

    def __init__(
        self, job: ClaimedJob, clients: RowDependencies, settings: GenerationSettings, spool: Path
    ) -> None:
        self.job = job
        self.clients = clients
        self.settings = settings
        self.spool = spool
        self.task_id = job.ai_task_id
        self.poll_failures = job.poll_failures
        # The step under way, named in metrics when it fails: validate, submit, poll, fetch, upload.
        self.step = FailureKind.VALIDATE
        self.failure_kind: FailureKind | None = None
        self.started = time.monotonic()
        self.progress = ProgressReporter(
            self._write_progress, start=job.progress, interval_s=settings.progress_interval_s
        )
        self.milestones = MilestoneTracker(job, clients.milestones.reached)
        age = job.submitted_age_s if job.ai_task_id is not None and job.submitted_age_s is not None else 0.0
        # When the row fails as timed out (time.monotonic()): counted from the submission, or
        # from the claim while nothing is submitted yet. It bounds every step, hung ones too.
        self.deadline = time.monotonic() + settings.generation_timeout_s - age
        self._timeout: asyncio.Timeout | None = None
        self.results = ResultFiles(job, clients, settings, spool, self._poll, self._deadline_paused)

    async def run(self) -> FinishedRow | None:
        """Takes the row to `completed`; None if it was no longer ours. Failures raise PermanentError."""
        try:
            async with asyncio.timeout_at(self._loop_time(self.deadline)) as self._timeout:
                results = await self._generate()
        except TimeoutError as exc:
            if self._timeout is None or not self._timeout.expired():
                raise
            raise self._timed_out() from exc
        finished = await self.settings.retry.call(
            lambda: self.clients.db.complete(self.job.model_id, self.settings.owner, results)
        )
        if finished is not None:
            log.info("job_completed", extra={"file_size": results.file_size, "seconds": self._elapsed()})
        return finished

    async def _generate(self) -> CompletedColumns:
        request = validate(
            self.job,
            bucket=self.settings.bucket,
            public_base_url=self.settings.public_base_url,
            source_hosts=self.settings.source_hosts,
        )
        if self.task_id is None:
            # Before any money is spent: a GLB the bucket's own types refuse could never be kept.
            self.results.check_bucket_takes_the_model()
            self.step = FailureKind.SUBMIT
            await self._submit(request)
            self.milestones.started()
            await asyncio.sleep(self.settings.poll_interval_s)  # the task has only just started
        else:
            log.info("job_resumed", extra={"ai_task_id": self.task_id, "attempt": self.job.attempts})
        self.step = FailureKind.POLL
        state = await self._poll_until_finished()
        if state.status == "FAILED":
            raise PermanentError(
                state.failure_reason or "The AI server reported that the generation failed.",
                kind=FailureKind.UPSTREAM,
            )
        if state.status == "CANCELED":
            raise PermanentError("The AI server cancelled the generation.", kind=FailureKind.UPSTREAM)
        self.step = FailureKind.FETCH
        fetched = await self.results.fetch_all(state)
        await self.progress.report(FETCHED, force=True)
        self.milestones.uploading(FETCHED)
        self.step = FailureKind.UPLOAD
        results = await self.results.upload_all(fetched, self.task_id)
        await self.progress.report(UPLOADED, force=True)
        return results

    async def fail(self, reason: str) -> FinishedRow | None:
        """Marks the row failed with `reason`; None if the job was no longer ours."""
        metadata: dict[str, Any] = {"ai_task_id": self.task_id} if self.task_id else {}
        log.info("job_failed", extra={"reason": reason, "seconds": self._elapsed()})
        try:
            finished = await self.settings.retry.call(
                lambda: self.clients.db.fail(self.job.model_id, self.settings.owner, reason, metadata)
            )
        except TransientError:
            log.warning("job_fail_not_recorded")
            return None
        await self.discard_if_abandoned()  # a row that failed keeps none of its files
        return finished

    async def discard_if_abandoned(self) -> None:
        """Removes what this coroutine uploaded when no replica will complete the row."""
        # Not otherwise: a replica that took the row over uploads to the same paths and completes it.
        if not self.results.uploaded:
            return
        try:
            abandoned = await self.clients.db.abandoned(self.job.model_id)
        except TransientError as exc:
            log.warning("uploads_kept", extra={"error": str(exc)})
            return
        if abandoned:
            await self.results.discard()

    # -- submit ---------------------------------------------------------------------------

    async def _submit(self, request: ValidRequest) -> None:
        image = await self._source_image(request.image) if request.image else None
        # Seen through even when the row's coroutine is cancelled (shutdown, lost lease): a
        # generation the AI server started must have its task id stored, or the replica that
        # takes the row over pays for it twice. Not so when the deadline ends the row: it
        # fails for good and is never submitted again, so nothing is waited for.
        submitting = asyncio.ensure_future(self._submit_and_record(request, image))
        try:
            await asyncio.shield(submitting)
        except asyncio.CancelledError:
            deadline_passed = self._timeout is not None and self._timeout.expired()
            await asyncio.wait([submitting], timeout=0 if deadline_passed else SUBMIT_GRACE_S)
            if not submitting.done():
                submitting.cancel()
            elif not submitting.cancelled():
                submitting.exception()  # the row is stopping: how the submission ended changes nothing
            raise

    async def _submit_and_record(self, request: ValidRequest, image: ImageFile | None) -> None:
        try:
            task_id = await self.settings.retry.call(
                lambda: self.clients.ai.submit(request.model, image), give_up_on=(AIServerUnreachable,)
            )
        except TransientError as exc:
            # Nothing was started (a submission that may have started raises PermanentError):
            # the row goes back to wait, and the replica claims no more until the server is back.
            self.clients.ai_state.set_problem(f"the AI server does not take submissions: {exc}")
            raise AIServerUnreachable(str(exc)) from exc
        await self._record_task_id(task_id)
        self.task_id = task_id
        self._set_deadline(time.monotonic() + self.settings.generation_timeout_s)
        log.info("job_submitted", extra={"ai_task_id": task_id, "task": request.model.task})

    async def _record_task_id(self, task_id: str) -> None:
        """Stores the id of the generation just started, waiting out a database that is away."""
        # Handing the row back instead would have the replica that takes it up start a second
        # generation: the id is offered again every RECORD_RETRY_S until the database takes it,
        # so that it is stored within a second of the database answering again.
        tries = 0
        while True:
            try:
                recorded = await self.clients.db.record_task_id(
                    self.job.model_id, self.settings.owner, task_id
                )
            except DatabaseUnavailable as exc:
                tries += 1
                if tries == 1 or tries % 30 == 0:
                    log.warning("task_id_not_stored_yet", extra={"ai_task_id": task_id, "error": str(exc)})
                await asyncio.sleep(RECORD_RETRY_S)
                continue
            if not recorded:
                raise LeaseLost
            return

    async def _source_image(self, image: SourceImage) -> ImageFile:
        dest = self._spooled(f"source-{image.filename}")
        try:
            if image.storage_path is not None:
                path = image.storage_path
                await self.settings.retry.call(
                    lambda: self.clients.storage.download(path, dest, MAX_SOURCE_IMAGE_BYTES)
                )
            else:
                assert image.url is not None
                url = image.url
                await self.settings.retry.call(
                    lambda: self.clients.fetch_url(url, dest, MAX_SOURCE_IMAGE_BYTES)
                )
        except FileGone as exc:
            raise PermanentError("The source image was not found at its URL.") from exc
        except TransientError as exc:
            raise PermanentError(
                f"The source image could not be fetched; the last error was: {_clause(exc)}."
            ) from exc
        return ImageFile(dest, image.filename, image.content_type)

    # -- poll -----------------------------------------------------------------------------

    async def _poll_until_finished(self) -> TaskState:
        while True:
            state = await self._poll()
            if state.finished:
                return state
            await self.progress.report(from_ai_progress(state.progress))
            self.milestones.progressed(self.progress.latest)
            delay = min(self.settings.poll_interval_s, max(0.0, self.deadline - time.monotonic()))
            due = time.monotonic() + delay
            await asyncio.sleep(delay)
            self.clients.metrics.poll_lateness.observe(max(0.0, time.monotonic() - due))

    async def _poll(self) -> TaskState:
        """One successful poll, retrying failed ones with backoff up to the failure budget."""
        assert self.task_id is not None
        task_id = self.task_id
        failures = self.poll_failures
        # Failed polls back off from one poll interval up to eight, with jitter.
        policy = RetryPolicy(
            first_wait_s=self.settings.poll_interval_s,
            max_wait_s=min(60.0, 8 * self.settings.poll_interval_s),
            deadline_s=max(0.0, self.deadline - time.monotonic()),
            max_attempts=max(1, self.settings.max_poll_failures - failures),
        )

        async def poll_once() -> TaskState:
            if time.monotonic() >= self.deadline:
                raise self._timed_out()
            self.clients.metrics.ai_polls.inc()
            try:
                return await self.clients.ai.poll(task_id)
            except TransientError as exc:
                self.clients.metrics.ai_poll_errors.inc()
                nonlocal failures
                failures += 1
                if not await self._record_poll_failures(failures):
                    raise LeaseLost from exc
                log.warning("poll_failed", extra={"failures": failures, "error": str(exc)})
                raise

        try:
            # The database failing to record a failed poll is not the AI server's failure:
            # the row is handed back, not failed.
            state = await policy.call(poll_once, give_up_on=(DatabaseUnavailable,))
        except DatabaseUnavailable:
            raise
        except TransientError as exc:
            if time.monotonic() >= self.deadline:
                raise self._timed_out() from exc
            if isinstance(exc, UnknownTask):
                raise PermanentError(
                    f"The AI server no longer knows this generation: {failures} polls in a row failed."
                ) from exc
            raise PermanentError(f"The AI server was unreachable for {failures} polls in a row.") from exc
        if failures:
            failures = 0
            if not await self._record_poll_failures(0):
                raise LeaseLost
        self.poll_failures = failures
        return state

    def _spooled(self, name: str) -> Path:
        """A path in the row's spool folder, made on first use (most of a row's life needs none)."""
        self.spool.mkdir(parents=True, exist_ok=True)
        return self.spool / name

    async def _record_poll_failures(self, failures: int) -> bool:
        return await self.settings.retry.call(
            lambda: self.clients.db.record_poll_failures(self.job.model_id, self.settings.owner, failures)
        )

    async def _write_progress(self, value: int) -> None:
        # Progress is a courtesy: a write that cannot be made is skipped, the next one catches up.
        try:
            written = await self.clients.db.write_progress(self.job.model_id, self.settings.owner, value)
        except Exception as exc:  # whatever it was, progress never fails a row
            log.warning("progress_not_written", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        if written:
            self.clients.metrics.progress_writes.inc()

    @contextlib.asynccontextmanager
    async def _deadline_paused(self) -> AsyncIterator[None]:
        """The row's deadline stops for the block and goes on with what was left of it."""
        left_s = max(0.0, self.deadline - time.monotonic())
        if self._timeout is not None:
            self._timeout.reschedule(None)
        try:
            yield
        finally:
            self._set_deadline(time.monotonic() + left_s)

    def _set_deadline(self, deadline: float) -> None:
        self.deadline = deadline
        if self._timeout is not None:
            self._timeout.reschedule(self._loop_time(deadline))

    @staticmethod
    def _loop_time(monotonic: float) -> float:
        """A time.monotonic() instant on the event loop's clock."""
        return asyncio.get_running_loop().time() + monotonic - time.monotonic()

    def _timed_out(self) -> PermanentError:
        return PermanentError(
            f"Generation timed out after {_duration(self.settings.generation_timeout_s)}.",
            kind=FailureKind.TIMEOUT,
        )

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)


def _clause(exc: BaseException) -> str:
    """An error's message, to be quoted inside a sentence."""
    return str(exc).rstrip(".")


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"

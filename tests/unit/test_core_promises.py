"""What the core promises in words and numbers: the exact sentences owners read, the log's stable
event names, and the metrics operators graph. Each test here kills mutants the other unit tests let
live (see the README's "Mutation testing")."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest

from listener.core.data import CompletedColumns, Ending, FinishedRow, JobOutcome, TaskState
from listener.core.generation import run_job
from listener.core.progress import ProgressReporter
from listener.core.results import human_duration
from listener.core.spool import SpoolBudget
from listener.core.storage_state import BucketLimits
from listener.core.supervisor import CLAIM_BATCH, MAX_CLAIMS
from listener.core.validation import SourceImage, validate
from listener.errors import DatabaseUnavailable, PermanentError, TransientError
from tests.unit import fakes
from tests.unit.fakes import OWNER, TASK_ID, claimed_job, in_progress, succeeded
from tests.unit.test_results import PNG, Row
from tests.unit.test_supervisor import eventually, settle, supervising

SAFETY_S = 2.0


async def run(
    tmp_path: Path, store: fakes.FakeJobStore, ai: fakes.FakeModelServer, job: object, **settings: object
) -> tuple[JobOutcome, fakes.Row]:
    assert isinstance(job, type(claimed_job()))
    if job.model_id not in store.rows:
        store.add(job, owner=OWNER)
    clients = fakes.clients(store, ai)
    outcome = await asyncio.wait_for(
        run_job(job, clients, fakes.generation_settings(tmp_path, **settings)), SAFETY_S
    )
    return outcome, store.row(job.model_id)


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def record(caplog: pytest.LogCaptureFixture, event: str) -> logging.LogRecord:
    """The first record of `event`."""
    found = [r for r in caplog.records if r.getMessage() == event]
    assert found, f"no {event} in {events(caplog)}"
    return found[0]


# -- the sentences owners read ----------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout_s", "said"),
    [
        (1.0, "1 second"),
        (2.0, "2 seconds"),
        (60.0, "1 minute"),
        (90.0, "90 seconds"),
        (120.0, "2 minutes"),
        (1800.0, "30 minutes"),
        (3600.0, "60 minutes"),
    ],
)
async def test_a_timed_out_row_says_its_budget_in_words(tmp_path: Path, timeout_s: float, said: str) -> None:
    job = claimed_job(ai_task_id=TASK_ID, submitted_age_s=timeout_s + 1)
    outcome, row = await run(
        tmp_path, fakes.FakeJobStore(), fakes.FakeModelServer(), job, generation_timeout_s=timeout_s
    )
    assert (outcome.outcome, outcome.failure_kind) == ("failed", "timeout")
    assert row.error_message == f"Generation timed out after {said}."
    assert row.metadata == {"ai_task_id": TASK_ID}


@pytest.mark.parametrize(
    ("state", "said"),
    [
        (TaskState("FAILED", 40), "The AI server reported that the generation failed."),
        (TaskState("FAILED", 40, failure_reason="The prompt was refused."), "The prompt was refused."),
        (TaskState("CANCELED", 40), "The AI server cancelled the generation."),
    ],
)
async def test_a_task_the_ai_server_ended_fails_with_exactly_its_sentence(
    tmp_path: Path, state: TaskState, said: str
) -> None:
    outcome, row = await run(tmp_path, fakes.FakeJobStore(), fakes.FakeModelServer([state]), claimed_job())
    assert (outcome.outcome, outcome.failure_kind, row.error_message) == ("failed", "upstream", said)


async def test_a_row_failed_before_submission_keeps_no_task_id(tmp_path: Path) -> None:
    outcome, row = await run(tmp_path, fakes.FakeJobStore(), fakes.FakeModelServer(), claimed_job(prompt=" "))
    assert (outcome.outcome, outcome.failure_kind, row.error_message) == (
        "failed",
        "validate",
        "The prompt is empty.",
    )
    assert row.metadata == {}


async def test_a_source_image_that_is_not_there_is_said_plainly(tmp_path: Path) -> None:
    job = claimed_job(
        generation_type="image_to_3d", prompt=None, source_image_url=f"https://{fakes.SOURCE_HOST}/a.png"
    )
    _, row = await run(tmp_path, fakes.FakeJobStore(), fakes.FakeModelServer(), job)
    assert row.error_message == "The source image was not found at its URL."


# -- what a row writes while it runs ------------------------------------------------------


async def test_a_row_writes_its_own_progress_and_spools_under_its_own_folder(tmp_path: Path) -> None:
    store, ai = fakes.FakeJobStore(), fakes.FakeModelServer([in_progress(50), succeeded()])
    storage = fakes.FakeObjectStore()
    storage.hang_uploads = True
    job = store.add(claimed_job(), owner=OWNER)
    clients = fakes.clients(store, ai, storage)
    running = asyncio.create_task(run_job(job, clients, fakes.generation_settings(tmp_path)))
    await eventually(lambda: store.row(job.model_id).progress == 93, "progress 93 once the files are fetched")
    assert (tmp_path / "spool" / str(job.model_id) / "result.glb").exists()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert store.writes_of("write_progress") == [45, 93]
    assert not (tmp_path / "spool" / str(job.model_id)).exists()


# -- the log's stable event names ---------------------------------------------------------


async def test_a_rows_life_is_told_in_the_log_by_stable_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="listener")
    await run(tmp_path, fakes.FakeJobStore(), fakes.FakeModelServer(), claimed_job())
    assert events(caplog) == ["job_submitted", "job_completed"]
    submitted = record(caplog, "job_submitted")
    assert (submitted.ai_task_id, submitted.task) == (TASK_ID, "text_to_3d")  # type: ignore[attr-defined]
    assert record(caplog, "job_completed").file_size == len(fakes.GLB)  # type: ignore[attr-defined]

    caplog.clear()
    resumed = claimed_job(ai_task_id=TASK_ID, submitted_age_s=1.0, attempts=3)
    await run(tmp_path, fakes.FakeJobStore(), fakes.FakeModelServer([TaskState("FAILED", 0)]), resumed)
    assert events(caplog) == ["job_resumed", "job_failed"]
    assert (record(caplog, "job_resumed").ai_task_id, record(caplog, "job_resumed").attempt) == (TASK_ID, 3)  # type: ignore[attr-defined]
    assert record(caplog, "job_failed").reason == "The AI server reported that the generation failed."  # type: ignore[attr-defined]


async def test_a_row_that_stops_without_an_end_says_why_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="listener")
    store = fakes.FakeJobStore()
    job = store.add(claimed_job(), owner=fakes.OTHER_OWNER)
    assert (await run(tmp_path, store, fakes.FakeModelServer(), job))[0] == JobOutcome(Ending.LOST)
    assert events(caplog) == ["job_lost"]

    caplog.clear()
    store = fakes.FakeJobStore()
    store.unavailable = {"complete"}
    assert (await run(tmp_path, store, fakes.FakeModelServer(), claimed_job()))[0] == JobOutcome(
        Ending.RELEASED
    )
    assert "job_released_database_unavailable" in events(caplog)

    caplog.clear()
    ai = fakes.FakeModelServer([TransientError("HTTP 502"), succeeded()])
    await run(tmp_path, fakes.FakeJobStore(), ai, claimed_job(ai_task_id=TASK_ID, submitted_age_s=1.0))
    failed_poll = record(caplog, "poll_failed")
    assert (failed_poll.failures, failed_poll.error) == (1, "HTTP 502")  # type: ignore[attr-defined]


# -- the supervisor's metrics and events --------------------------------------------------


def sample(h: object, name: str, **labels: str) -> float:
    metrics = getattr(h, "metrics")  # noqa: B009
    return float(metrics.registry.get_sample_value(name, labels) or 0.0)


async def test_the_supervisor_counts_what_became_of_each_row(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="listener")
    async with supervising(concurrency=5) as h:
        completed, failed, crashed, cancelled = h.add(4)
        h.source.connect()
        await h.running(4)
        claims = [
            (r.__dict__["model_id"], r.__dict__["attempt"])
            for r in caplog.records
            if r.getMessage() == "job_claimed"
        ]
        assert claims == [(str(j.model_id), 1) for j in (completed, failed, crashed, cancelled)]
        h.runner.finish(completed.model_id, "completed")
        h.runner.finish(failed.model_id, "failed")
        h.runner.finish(crashed.model_id, RuntimeError("a bug in the row"))
        await eventually(lambda: list(h.supervisor.running) == [cancelled.model_id], "three rows ended")
        h.store.lose(cancelled.model_id)
        h.source.cancel(cancelled.model_id)
        await eventually(lambda: len(h.notified) == 2 and not h.runner.running, "rows ended")
        await settle()
        assert sample(h, "listener_rows_claimed_total") == 4
        assert sample(h, "listener_claim_latency_seconds_count") == 4
        assert sample(h, "listener_rows_completed_total") == 1
        assert sample(h, "listener_rows_failed_total", reason="validate") == 1
        assert sample(h, "listener_rows_cancelled_total") == 1
        assert sample(h, "listener_rows_in_flight") == 0
        assert sample(h, "listener_end_to_end_seconds_count") == 2
        assert 0 < sample(h, "listener_end_to_end_seconds_sum") < 60
        assert record(caplog, "job_crashed").model_id == str(crashed.model_id)  # type: ignore[attr-defined]
        assert record(caplog, "job_lease_lost").model_id == str(cancelled.model_id)  # type: ignore[attr-defined]
    # Stopping cancels nothing that counts as a cancel, and says what it handed back.
    assert sample(h, "listener_rows_cancelled_total") == 1


async def test_a_row_claimed_again_counts_no_new_claim_latency() -> None:
    async with supervising() as h:
        [job] = h.add(attempts=0)
        h.store.row(job.model_id).attempts = 2  # claimed twice before, by replicas that died
        h.source.connect()
        await h.running(1)
        assert sample(h, "listener_rows_claimed_total") == 1
        assert sample(h, "listener_claim_latency_seconds_count") == 0


async def test_a_failure_without_a_kind_is_counted_as_other() -> None:
    async def fail_without_kind(job: object) -> JobOutcome:
        finished = FinishedRow(uuid.uuid4(), uuid.uuid4(), "Vase", "failed", "no kind")
        return JobOutcome(Ending.FAILED, finished, None)

    async with supervising() as h:
        h.supervisor.run_job = fail_without_kind  # a runner of another shape: a port, not the core
        h.add()
        h.source.connect()
        await eventually(lambda: bool(h.notified), "the owner told")
        assert sample(h, "listener_rows_failed_total", reason="other") == 1


async def test_stopping_hands_back_the_leases_and_says_how_many(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="listener")
    async with supervising() as h:
        h.add(2)
        h.source.connect()
        await h.running(2)
        await h.stop()
    assert record(caplog, "leases_released").count == 2  # type: ignore[attr-defined]
    assert sample(h, "listener_rows_cancelled_total") == 0


async def test_a_database_away_at_stop_leaves_the_leases_to_expire_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="listener")
    async with supervising() as h:
        h.add(1)
        h.source.connect()
        await h.running(1)

        async def unavailable(owner: str) -> int:
            raise DatabaseUnavailable("the database is away")

        h.store.release_leases = unavailable  # type: ignore[method-assign]
        await h.stop()
    assert "leases_not_released" in events(caplog)


# -- the files of a finished task -----------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0.2, "0.2 seconds"),
        (1, "1 second"),
        (2, "2 seconds"),
        (60, "1 minute"),
        (90, "90 seconds"),
        (120, "2 minutes"),
        (3600, "1 hour"),
        (3660, "61 minutes"),
        (5400, "90 minutes"),
        (7200, "2 hours"),
        (21600, "6 hours"),
    ],
)
def test_how_long_storage_was_waited_for_is_said_in_words(seconds: float, said: str) -> None:
    assert human_duration(seconds) == said


async def test_the_bucket_limits_refuse_a_model_as_an_upload_failure_and_take_one_at_the_limit(
    tmp_path: Path,
) -> None:
    limit = 50 * 1024 * 1024
    for size, outcome in ((limit + 1, "failed"), (limit, "completed")):
        row = Row(tmp_path / str(size))
        row.ai.polls = [succeeded(result={"glb_file_size": size})]
        row.clients.storage_state.update(None, BucketLimits(file_size_limit=limit))
        ended = await row.run()
        assert ended.outcome == outcome
        assert ended.failure_kind == ("upload" if outcome == "failed" else None)
    refusing = Row(tmp_path / "types")
    refusing.clients.storage_state.update(None, BucketLimits(allowed_mime_types=frozenset({"image/*"})))
    assert (await refusing.run()).failure_kind == "upload"
    assert refusing.error_message == (
        "The bucket ai-models does not accept GLB models (model/gltf-binary is not an allowed type)."
    )


async def test_storage_that_stays_broken_is_an_upload_failure(tmp_path: Path) -> None:
    row = Row(tmp_path)
    row.clients.storage_state.update("the bucket ai-models does not exist")
    assert (await row.run(storage_hold_s=0.05)).failure_kind == "upload"


async def test_a_glb_that_keeps_failing_says_the_last_error_and_a_gone_one_says_so(tmp_path: Path) -> None:
    failing = Row(tmp_path / "failing")
    failing.ai.fetch_errors = [TransientError("HTTP 502")] * 3
    await failing.run()
    assert failing.error_message == "The GLB model could not be fetched from the AI server (HTTP 502)."
    assert len(failing.ai.fetches) == 3
    gone = Row(tmp_path / "gone")
    gone.ai.gone = {fakes.GLB_URL}
    await gone.run()
    assert gone.error_message == "The GLB model could not be fetched from the AI server (it was gone)."


async def test_an_upload_that_keeps_failing_quotes_storage_without_a_double_stop(tmp_path: Path) -> None:
    row = Row(tmp_path)
    row.storage.upload_errors = [TransientError("SlowDown.")] * 10
    await row.run()
    assert row.error_message == "Storage kept failing the upload; the last answer was: SlowDown."


# -- the supervisor's wake-ups, leases and loops ----------------------------------------------


async def test_a_notification_with_one_free_slot_claims() -> None:
    async with supervising(concurrency=2) as h:
        _, second = h.add(2)
        h.store.row(second.model_id).owner = "held-elsewhere"  # not claimable yet
        h.source.connect()
        await h.running(1)
        h.store.expire(second.model_id)
        h.source.job(second.model_id)
        await h.running(2)


async def test_a_backlog_larger_than_a_claim_batch_is_taken_in_one_look() -> None:
    rows = CLAIM_BATCH + 20
    async with supervising(concurrency=rows + 10) as h:
        h.add(rows)
        h.source.connect()
        await h.running(rows)
        assert [slots for _, slots, _, _ in h.store.claims][:2] == [CLAIM_BATCH, 10 + 20]


async def test_leases_are_renewed_for_the_configured_term_and_stuck_jobs_given_up_after_max_claims() -> None:
    async with supervising(lease_s=0.03, sweep_interval_s=0.01) as h:
        h.add(1)
        h.source.connect()
        await h.running(1)
        await eventually(lambda: bool(h.store.renewal_leases) and bool(h.store.give_up_after), "a renewal")
        assert set(h.store.renewal_leases) == {0.03}
        assert set(h.store.give_up_after) == {MAX_CLAIMS}


async def test_a_loop_that_dies_is_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="listener")
    async with supervising() as h:
        h.source.die(RuntimeError("the listen loop crashed"))
        await eventually(lambda: not h.supervisor.healthy, "unhealthy")
        ended = record(caplog, "loop_ended")
        assert ended.loop == "listen"  # type: ignore[attr-defined]
        assert ended.exc_info is not None and str(ended.exc_info[1]) == "the listen loop crashed"


async def test_a_completed_row_gets_every_column_of_its_results(tmp_path: Path) -> None:
    stl_url, thumbnail_url = "https://ai.example/m.stl", "https://ai.example/t.png"
    dimensions, result = {"x": 1.5, "y": 2.0, "z": 3.25}, {"status": "SUCCEEDED", "glb_file_size": 2048}
    row = Row(tmp_path)
    row.ai.polls = [
        succeeded(stl_url=stl_url, thumbnail_url=thumbnail_url, dimensions=dimensions, result=result)
    ]
    row.ai.files = {stl_url: b"solid m", thumbnail_url: b"\x89PNG\r\n\x1a\n" + b"\x00" * 32}
    assert (await row.run()).outcome == "completed"
    user, model = row.job.user_id, row.job.model_id
    public = row.storage.public_url
    glb, stl, png = (
        f"{user}/generated-models/{model}.glb",
        f"{user}/generated-models/{model}.stl",
        f"{user}/thumbnails/{model}.png",
    )
    [results] = row.store.writes_of("complete")
    assert results == CompletedColumns(
        storage_path=glb,
        download_url=public(glb),
        file_size=len(fakes.GLB),
        stl_storage_path=stl,
        stl_download_url=public(stl),
        thumbnail_url=public(png),
        model_dimensions=dimensions,
        generation_metadata={"ai_task_id": TASK_ID, "ai_result": result},
    )
    assert set(row.storage.uploads) == {glb, stl, png}


async def test_a_row_without_stl_or_thumbnail_names_none(tmp_path: Path) -> None:
    row = Row(tmp_path)
    row.ai.polls = [succeeded()]
    assert (await row.run()).outcome == "completed"
    [results] = row.store.writes_of("complete")
    assert (results.stl_storage_path, results.stl_download_url, results.thumbnail_url) == (None, None, None)
    assert list(row.storage.uploads) == [results.storage_path]


@pytest.mark.parametrize(
    ("allowed", "refused"),
    [
        (None, False),
        (frozenset(), False),
        (frozenset({"model/gltf-binary"}), False),
        (frozenset({"model/*"}), False),
        (frozenset({"image/png", "model/gltf-binary"}), False),
        (frozenset({"image/*"}), True),
        (frozenset({"gltf-binary/*"}), True),
        (frozenset({"image/png", "application/octet-stream"}), True),
    ],
)
def test_a_bucket_refuses_a_type_only_when_neither_it_nor_its_family_is_listed(
    allowed: frozenset[str] | None, refused: bool
) -> None:
    assert BucketLimits(allowed_mime_types=allowed).refuses_type("model/gltf-binary") is refused


# -- room in the spool, progress, and where source images may come from ----------------------


async def test_the_spool_counts_what_each_row_holds_and_makes_a_row_wait_for_room(tmp_path: Path) -> None:
    spool = SpoolBudget(limit_bytes=10)
    assert [await spool.acquire(3), await spool.acquire(4)] == [3, 4]
    assert spool.used_bytes == 7
    waiting = asyncio.create_task(spool.acquire(5))
    for _ in range(5):  # every ready callback runs: an acquire with room would be done by now
        await asyncio.sleep(0)
    assert not waiting.done()
    spool.release(4)
    assert await asyncio.wait_for(waiting, SAFETY_S) == 5 and spool.used_bytes == 8

    held = SpoolBudget(limit_bytes=10 * 1024 * 1024)
    row = Row(tmp_path, held)
    row.storage.hang_uploads = True
    running = asyncio.create_task(row.run())
    await eventually(
        lambda: row.ai.fetches != [] and held.used_bytes == len(fakes.GLB) + len(PNG), "files held"
    )
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert held.used_bytes == 0


async def test_progress_is_written_again_once_exactly_the_interval_has_passed() -> None:
    now = [0.0]
    written: list[int] = []

    async def write(value: int) -> None:
        written.append(value)

    reporter = ProgressReporter(write, start=0, interval_s=2.0, clock=lambda: now[0])
    await reporter.report(10)
    now[0] = 1.9
    await reporter.report(20)
    now[0] = 2.0
    await reporter.report(30)
    assert written == [10, 30]


def test_a_public_url_of_the_bucket_is_read_as_its_storage_path_whatever_the_base_url_ends_with() -> None:
    owner = uuid.uuid4()
    for base in (fakes.PUBLIC_BASE_URL, fakes.PUBLIC_BASE_URL + "/"):
        url = f"{fakes.PUBLIC_BASE_URL}/storage/v1/object/public/{fakes.BUCKET}/{owner}/cat.png"
        job = claimed_job(user_id=owner, generation_type="image_to_3d", prompt=None, source_image_url=url)
        request = validate(job, bucket=fakes.BUCKET, public_base_url=base, source_hosts=frozenset())
        assert request.image == SourceImage(f"{owner}/cat.png", None, "cat.png", "image/png")


def test_a_source_url_without_a_host_is_refused_saying_so() -> None:
    job = claimed_job(generation_type="image_to_3d", prompt=None, source_image_url="https:///cat.png")
    with pytest.raises(PermanentError) as refused:
        validate(job, bucket=fakes.BUCKET, public_base_url=fakes.PUBLIC_BASE_URL, source_hosts=frozenset())
    assert str(refused.value) == "The source image is on an unknown host, which is not an allowed host."

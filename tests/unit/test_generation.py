"""One row's life through run_job, against in-memory fakes: what the owner sees at the end."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from listener.core.data import ClaimedJob, Ending, ImageFile, JobOutcome, ModelRequest, TaskState
from listener.core.generation import run_job
from listener.core.progress import ProgressReporter
from listener.errors import AIServerUnreachable, TransientError, UnknownTask
from tests.unit import fakes
from tests.unit.fakes import GLB, GLB_URL, OWNER, TASK_ID, claimed_job, in_progress, succeeded

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
SAFETY_S = 2.0  # a safety net against a hung test, never the assertion
UNEXPECTED = "The listener hit an unexpected error and stopped this generation."


@dataclass
class World:
    """The fakes one row talks to, and the row itself."""

    tmp_path: Path
    job: ClaimedJob = field(default_factory=claimed_job)
    store: fakes.FakeJobStore = field(default_factory=fakes.FakeJobStore)
    ai: fakes.FakeModelServer = field(default_factory=fakes.FakeModelServer)
    storage: fakes.FakeObjectStore = field(default_factory=fakes.FakeObjectStore)
    urls: fakes.FakeUrlFetcher = field(default_factory=fakes.FakeUrlFetcher)

    def start(self, job: ClaimedJob | None = None, **settings: Any) -> Any:
        job = job or self.job
        if job.model_id not in self.store.rows:
            self.store.add(job, owner=OWNER)
        clients = fakes.clients(self.store, self.ai, self.storage, self.urls)
        return run_job(job, clients, fakes.generation_settings(self.tmp_path, **settings))

    async def run(
        self, job: ClaimedJob | None = None, safety_s: float = SAFETY_S, **settings: Any
    ) -> JobOutcome:
        return await asyncio.wait_for(self.start(job, **settings), safety_s)

    @property
    def row(self) -> fakes.Row:
        return self.store.row(self.job.model_id)

    def resumed(self, **overrides: Any) -> ClaimedJob:
        self.job = claimed_job(**{"ai_task_id": TASK_ID, "submitted_age_s": 1.0, **overrides})
        return self.job


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def assert_failed(world: World, outcome: JobOutcome, message: str, kind: str | None = None) -> None:
    assert outcome.outcome == "failed"
    assert world.row.status == "failed"
    assert world.row.error_message is not None and message in world.row.error_message
    assert world.store.writes_of("complete") == []
    if kind is not None:
        assert outcome.failure_kind == kind


# -- the happy path ---------------------------------------------------------------------


async def test_a_text_to_3d_row_completes_with_its_model_uploaded_under_the_owners_folder(
    world: World,
) -> None:
    world.job = claimed_job(prompt="  a teapot ", symmetry_mode="on", target_polycount=30000.0)
    world.ai.polls = [in_progress(20), in_progress(60), succeeded()]
    outcome = await world.run()
    path = f"{world.job.user_id}/generated-models/{world.job.model_id}.glb"
    assert outcome.outcome == "completed"
    assert outcome.finished is not None and outcome.finished.status == "completed"
    assert world.ai.submits == [(ModelRequest("text_to_3d", "a teapot", "realistic", "on", 30000), None)]
    assert world.storage.uploads == {path: (GLB, "model/gltf-binary")}
    [results] = world.store.writes_of("complete")
    assert (results.storage_path, results.file_size) == (path, len(GLB))
    assert results.download_url == world.storage.public_url(path)
    assert results.generation_metadata["ai_task_id"] == TASK_ID
    assert world.store.writes_of("fail") == []
    progress = world.store.writes_of("write_progress")
    assert progress == sorted(set(progress)) and progress[-1] == 99
    assert not (world.tmp_path / "spool" / str(world.job.model_id)).exists()


async def test_an_stl_and_a_thumbnail_are_uploaded_beside_the_model(world: World) -> None:
    world.ai.polls = [succeeded(stl_url="https://ai.example/m.stl", thumbnail_url="https://ai.example/t.png")]
    world.ai.files = {"https://ai.example/m.stl": b"solid", "https://ai.example/t.png": PNG}
    await world.run()
    base, user = world.job.model_id, world.job.user_id
    assert world.storage.uploads[f"{user}/generated-models/{base}.stl"] == (
        b"solid",
        "application/octet-stream",
    )
    assert world.storage.uploads[f"{user}/thumbnails/{base}.png"] == (PNG, "image/png")
    assert world.row.results is not None
    assert world.row.results.stl_storage_path == f"{user}/generated-models/{base}.stl"


# -- submitting exactly once --------------------------------------------------------------


async def test_a_submission_cancelled_midway_is_recorded_and_not_sent_again(world: World) -> None:
    world.ai.submit_gate = asyncio.Event()
    task = asyncio.create_task(world.start())
    await asyncio.wait_for(world.ai.submit_started.wait(), SAFETY_S)
    task.cancel()
    await asyncio.sleep(0.01)  # the row takes the cancel while the AI server has not answered
    world.ai.submit_gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, SAFETY_S)
    assert world.row.ai_task_id == TASK_ID
    assert world.ai.submit_count == 1

    # Claimed again (ai_task_id set): the job is polled, never submitted again.
    outcome = await world.run(world.store.resumed(world.job.model_id))
    assert outcome.outcome == "completed"
    assert world.ai.submit_count == 1 and world.ai.polled == [TASK_ID]


async def test_a_submission_that_fails_once_is_retried(world: World) -> None:
    world.ai.submit_errors = [TransientError("HTTP 503")]
    assert (await world.run()).outcome == "completed"
    assert world.ai.submit_count == 2


async def test_a_submission_refused_for_now_hands_the_row_back_and_pauses_claims(world: World) -> None:
    """Nothing was started: the row waits for the AI server instead of failing (it is redeploying)."""
    world.ai.submit_errors = [TransientError(f"HTTP 50{i}.") for i in range(3)]
    clients = fakes.clients(world.store, world.ai, world.storage, world.urls)
    world.store.add(world.job, owner=OWNER)
    outcome = await asyncio.wait_for(
        run_job(world.job, clients, fakes.generation_settings(world.tmp_path)), SAFETY_S
    )
    assert outcome == JobOutcome(Ending.RELEASED)
    assert world.ai.submit_count == 3  # the retry policy's attempts, then it gave the row back
    assert world.row.status == "pending" and world.row.error_message is None
    assert world.store.writes_of("release_lease") == [OWNER]
    assert clients.ai_state.problem is not None and "HTTP 502" in clients.ai_state.problem


async def test_an_unreachable_ai_server_is_not_asked_again_and_again(world: World) -> None:
    world.ai.submit_errors = [AIServerUnreachable("connection refused")]
    clients = fakes.clients(world.store, world.ai, world.storage, world.urls)
    world.store.add(world.job, owner=OWNER)
    outcome = await asyncio.wait_for(
        run_job(world.job, clients, fakes.generation_settings(world.tmp_path)), SAFETY_S
    )
    assert outcome == JobOutcome(Ending.RELEASED)
    assert world.ai.submit_count == 1
    assert not clients.ai_state.usable


# -- the failure budget -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (TransientError("HTTP 502"), "The AI server was unreachable for 10 polls in a row."),
        (UnknownTask("HTTP 500"), "The AI server no longer knows this generation: 10 polls in a row failed."),
    ],
)
async def test_max_failed_polls_in_a_row_fail_the_row_with_a_plain_message(
    world: World, error: BaseException, message: str
) -> None:
    world.ai.polls = [error]
    outcome = await world.run()
    assert_failed(world, outcome, message, kind="poll")
    assert len(world.ai.polled) == 10
    assert world.store.writes_of("record_poll_failures") == list(range(1, 11))


async def test_a_successful_poll_resets_the_count_of_failed_polls(world: World) -> None:
    errors: list[TaskState | BaseException] = [TransientError("HTTP 502")] * 9
    world.ai.polls = [*errors, in_progress(50), *errors, succeeded()]
    assert (await world.run()).outcome == "completed"
    counts = list(range(1, 10))
    assert world.store.writes_of("record_poll_failures") == [*counts, 0, *counts, 0]


async def test_a_resumed_job_keeps_its_count_of_failed_polls(world: World) -> None:
    world.ai.polls = [TransientError("HTTP 502")]
    outcome = await world.run(world.resumed(poll_failures=8))
    assert_failed(world, outcome, "unreachable for 10 polls in a row")
    assert len(world.ai.polled) == 2


# -- result files -------------------------------------------------------------------------


async def test_a_result_file_that_is_gone_is_fetched_again_through_a_fresh_poll(world: World) -> None:
    fresh = "https://ai.example/files/task-1/fresh.glb"
    world.ai.polls = [succeeded(GLB_URL), succeeded(fresh)]
    world.ai.gone = {GLB_URL}
    assert (await world.run()).outcome == "completed"
    assert world.ai.fetches == [GLB_URL, fresh]
    assert world.row.results is not None and world.row.results.file_size == len(GLB)


@pytest.mark.parametrize(
    ("later", "message"),
    [
        (succeeded(), "The GLB model could not be fetched from the AI server (it was gone)."),
        (TaskState("FAILED", 0), "The AI server lost the finished model (status FAILED)."),
    ],
)
async def test_a_result_file_that_stays_gone_fails_the_row_saying_so(
    world: World, later: TaskState, message: str
) -> None:
    world.ai.polls, world.ai.gone = [succeeded(), later], {GLB_URL}
    assert_failed(world, await world.run(), message)
    assert world.storage.uploads == {}


async def test_an_optional_file_that_stays_gone_does_not_fail_the_row(world: World) -> None:
    world.ai.polls = [succeeded(stl_url="https://ai.example/m.stl")]
    world.ai.gone = {"https://ai.example/m.stl"}
    assert (await world.run()).outcome == "completed"
    assert world.row.results is not None and world.row.results.stl_storage_path is None


@pytest.mark.parametrize(
    ("state", "content", "message"),
    [
        (succeeded(), b"<html>Not found</html>", "not a GLB model"),
        (succeeded(glb_url=None), GLB, "offered no GLB model the listener may fetch"),
    ],
)
async def test_a_result_without_a_valid_glb_fails_the_row(
    world: World, state: TaskState, content: bytes, message: str
) -> None:
    world.ai.polls, world.ai.files = [state], {GLB_URL: content}
    assert_failed(world, await world.run(), message, kind="fetch")
    assert world.storage.uploads == {}


async def test_an_upload_that_keeps_failing_fails_the_row_with_storages_answer(world: World) -> None:
    world.storage.upload_errors = [TransientError("HTTP 503 Slow Down")] * 3
    outcome = await world.run()
    assert_failed(world, outcome, "Storage kept failing the upload; the last answer was: HTTP 503 Slow Down.")
    assert outcome.failure_kind == "upload"


# -- the deadline -------------------------------------------------------------------------


@pytest.mark.parametrize("step", ["source image", "submit", "poll", "fetch", "upload"])
async def test_the_deadline_ends_a_hung_step_as_timed_out(world: World, step: str) -> None:
    if step == "source image":
        image_job(world, f"https://{fakes.SOURCE_HOST}/cat.png")
        world.urls.hang = True
    elif step == "upload":
        world.storage.hang_uploads = True
    else:
        world.ai.hang.add(step)
    outcome = await world.run(generation_timeout_s=0.2, safety_s=1.0)
    assert_failed(world, outcome, "Generation timed out after 0.2 seconds.", kind="timeout")


async def test_a_resumed_row_submitted_longer_ago_than_the_timeout_fails_as_timed_out(world: World) -> None:
    job = world.resumed(submitted_age_s=120.0)
    outcome = await world.run(job, generation_timeout_s=60.0)
    assert_failed(world, outcome, "Generation timed out after 1 minute.", kind="timeout")
    assert world.ai.polled == []


# -- leases and the database --------------------------------------------------------------


@pytest.mark.parametrize(("write", "polls"), [("record_task_id", 0), ("record_poll_failures", 1)])
async def test_a_lost_lease_stops_the_row_without_writing(world: World, write: str, polls: int) -> None:
    world.store.add(world.resumed() if polls else world.job, owner=fakes.OTHER_OWNER)  # taken over
    world.ai.polls = [TransientError("HTTP 502")]
    assert await world.run() == JobOutcome(Ending.LOST)
    assert world.store.writes_of("complete") == world.store.writes_of("fail") == []
    assert len(world.store.writes_of(write)) == 1 and len(world.ai.polled) == polls


async def test_a_row_no_longer_ours_at_completion_ends_as_lost(world: World) -> None:
    world.store.add(world.resumed(), owner=fakes.OTHER_OWNER)
    assert await world.run() == JobOutcome(Ending.LOST)
    assert world.row.status == "pending"


async def test_an_unreachable_database_hands_the_job_back(world: World) -> None:
    world.store.unavailable = {"complete"}
    assert await world.run() == JobOutcome(Ending.RELEASED)
    assert world.store.writes_of("release_lease") == [OWNER]
    assert world.row.owner is None and world.row.status == "pending"


async def test_the_task_id_of_a_generation_just_started_is_stored_once_the_database_is_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handed back instead, the row would be submitted again by the replica that takes it up."""
    monkeypatch.setattr("listener.core.generation.RECORD_RETRY_S", 0.01, raising=False)
    world.store.unavailable = {"record_task_id"}
    asyncio.get_running_loop().call_later(0.2, world.store.unavailable.clear)  # the database is back
    assert (await world.run()).outcome == "completed"
    assert world.ai.submit_count == 1
    assert world.store.writes_of("release_lease") == []


async def test_a_database_away_while_polls_fail_hands_the_job_back_instead_of_failing_it(
    world: World,
) -> None:
    """A failed poll that cannot be recorded is the database's trouble, not the AI server's."""
    world.store.unavailable = {"record_poll_failures"}
    world.ai.polls = [TransientError("HTTP 502")]
    assert await world.run() == JobOutcome(Ending.RELEASED)
    assert len(world.ai.polled) == 1  # not polled again and again while the database is away
    assert world.store.writes_of("release_lease") == [OWNER]
    assert world.row.status == "pending" and world.row.error_message is None


async def test_progress_that_cannot_be_written_does_not_stop_the_row(world: World) -> None:
    world.store.unavailable = {"write_progress"}
    world.ai.polls = [in_progress(50), succeeded()]
    assert (await world.run()).outcome == "completed"


# -- what the AI server and the unexpected say --------------------------------------------


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (TaskState("FAILED", 30, failure_reason="The prompt breaks the content policy."), "content policy"),
        (TaskState("FAILED", 30), "The AI server reported that the generation failed."),
        (TaskState("CANCELED", 30), "The AI server cancelled the generation."),
    ],
)
async def test_a_task_the_server_ended_fails_the_row_with_its_reason(
    world: World, state: TaskState, message: str
) -> None:
    world.ai.polls = [in_progress(10), state]
    outcome = await world.run()
    assert_failed(world, outcome, message, kind="upstream")
    assert world.row.metadata == {"ai_task_id": TASK_ID}


@pytest.mark.parametrize("where", ["submit", "poll", "upload"])
async def test_an_unexpected_exception_fails_the_row_with_the_generic_sentence(
    world: World, where: str
) -> None:
    boom = RuntimeError("internal detail the owner must not read")
    if where == "submit":
        world.ai.submit_errors = [boom]
    elif where == "poll":
        world.ai.polls = [boom]
    else:
        world.storage.upload_errors = [boom]
    outcome = await world.run()
    assert_failed(world, outcome, UNEXPECTED, kind="internal")
    assert world.row.error_message == UNEXPECTED


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt": "  "}, "The prompt is empty."),
        ({"generation_type": "sketch_to_3d"}, "'sketch_to_3d' is not supported"),
        ({"target_polycount": 50.0}, "target polycount must be a whole number"),
        (
            {"generation_type": "image_to_3d", "source_image_url": "https://evil.example.net/cat.png"},
            "evil.example.net, which is not an allowed host",
        ),
    ],
)
async def test_a_bad_request_fails_before_anything_is_submitted(
    world: World, overrides: dict[str, Any], message: str
) -> None:
    world.job = claimed_job(**overrides)
    assert_failed(world, await world.run(), message, kind="validate")
    assert world.ai.submit_count == 0
    assert world.urls.calls == world.storage.downloads == []


# -- progress -----------------------------------------------------------------------------


@pytest.mark.parametrize(("interval_s", "written"), [(0.0, [9, 45, 72, 93, 99]), (3600.0, [9, 93, 99])])
async def test_progress_of_a_generation_only_rises_and_is_written_at_most_once_per_interval(
    world: World, interval_s: float, written: list[int]
) -> None:
    world.ai.polls = [in_progress(10), in_progress(50), in_progress(30), in_progress(80), succeeded()]
    await world.run(progress_interval_s=interval_s)
    assert world.store.writes_of("write_progress") == written


async def test_a_resumed_row_never_writes_progress_below_what_it_had(world: World) -> None:
    world.ai.polls = [in_progress(10), in_progress(60), succeeded()]
    await world.run(world.resumed(progress=50))
    assert world.store.writes_of("write_progress") == [54, 93, 99]


async def test_the_progress_reporter_writes_the_highest_value_once_the_interval_has_passed() -> None:
    now, written = [0.0], []

    async def write(value: int) -> None:
        written.append(value)

    reporter = ProgressReporter(write, start=5, interval_s=2.0, clock=lambda: now[0])
    for t, value in [(0.0, 3), (0.0, 10), (1.0, 40), (1.5, 20), (2.5, 25), (3.0, 60), (4.5, 70), (9.0, 70)]:
        now[0] = t
        await reporter.report(value)
    assert written == [10, 40, 70]
    await reporter.report(50, force=True)
    assert written == [10, 40, 70]


# -- image-to-3D --------------------------------------------------------------------------


def image_job(world: World, source: str) -> ClaimedJob:
    user = uuid.uuid4()
    source = source.format(user=user)
    world.job = claimed_job(user_id=user, generation_type="image_to_3d", prompt=None, source_image_url=source)
    return world.job


@pytest.mark.parametrize(
    "source",
    [
        "{user}/uploads/cat.png",
        "https://project.supabase.co/storage/v1/object/public/ai-models/{user}/uploads/cat.png",
    ],
)
async def test_an_image_in_storage_is_downloaded_and_sent_with_the_request(world: World, source: str) -> None:
    job = image_job(world, source)
    world.storage.objects[f"{job.user_id}/uploads/cat.png"] = b"\x89PNG cat"
    assert (await world.run()).outcome == "completed"
    assert world.storage.downloads == [f"{job.user_id}/uploads/cat.png"]
    assert world.urls.calls == []
    [(request, image)] = world.ai.submits
    assert request == ModelRequest("image_to_3d", None, "realistic")
    assert isinstance(image, ImageFile) and (image.filename, image.content_type) == ("cat.png", "image/png")
    assert world.ai.submitted_images == [b"\x89PNG cat"]


async def test_an_image_on_an_allowed_host_is_fetched_and_sent_with_the_request(world: World) -> None:
    url = f"https://{fakes.SOURCE_HOST}/pictures/dog.jpg"
    image_job(world, url)
    world.urls.files[url] = b"jpeg dog"
    assert (await world.run()).outcome == "completed"
    assert world.urls.calls == [url]
    [(_, image)] = world.ai.submits
    assert image is not None and (image.filename, image.content_type) == ("dog.jpg", "image/jpeg")
    assert world.ai.submitted_images == [b"jpeg dog"]


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("https://images.example.com/missing.png", None, "The source image was not found at its URL."),
        ("{user}/missing.webp", None, "The source image was not found at its URL."),
        ("https://images.example.com/cat.png", TransientError("HTTP 502"), "the last error was: HTTP 502."),
    ],
)
async def test_a_source_image_that_cannot_be_had_fails_the_row_before_anything_is_submitted(
    world: World, source: str, error: BaseException | None, message: str
) -> None:
    image_job(world, source)
    world.urls.error = error
    assert_failed(world, await world.run(), message)
    assert world.ai.submit_count == 0

"""A finished task's files in hard conditions: a full disk, a slow server, a fake picture, a shared spool."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from listener.core.data import JobOutcome
from listener.core.generation import run_job
from listener.core.spool import SpoolBudget
from listener.core.storage_state import BucketLimits
from listener.errors import (
    BUCKET_LIMIT,
    STORAGE_SETUP,
    PermanentError,
    SpoolUnavailable,
    TransferStalled,
    TransientError,
)
from listener.sizes import human_size
from tests.unit import fakes
from tests.unit.fakes import GLB, GLB_URL, OWNER, claimed_job, succeeded

SAFETY_S = 5.0  # a safety net against a hung test, never the assertion
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
THUMBNAIL_URL = "https://ai.example/files/t.png"


class Row:
    """One row run to its end against fakes; the fakes stay reachable for the assertions."""

    def __init__(self, tmp_path: Path, spool: SpoolBudget | None = None) -> None:
        self.tmp_path = tmp_path
        self.job = claimed_job()
        self.store = fakes.FakeJobStore()
        self.store.add(self.job, owner=OWNER)
        self.ai = fakes.FakeModelServer([succeeded(thumbnail_url=THUMBNAIL_URL)])
        self.ai.files = {THUMBNAIL_URL: PNG}
        self.storage = fakes.FakeObjectStore()
        self.clients = fakes.clients(self.store, self.ai, self.storage, fakes.FakeUrlFetcher())
        if spool is not None:
            self.clients = replace(self.clients, spool=spool)

    async def run(self, **settings: object) -> JobOutcome:
        generation = fakes.generation_settings(self.tmp_path, **settings)
        return await asyncio.wait_for(run_job(self.job, self.clients, generation), SAFETY_S)

    @property
    def error_message(self) -> str | None:
        return self.store.row(self.job.model_id).error_message


@pytest.fixture
def row(tmp_path: Path) -> Row:
    return Row(tmp_path)


async def test_a_full_disk_keeps_the_generation_and_the_file_is_asked_for_again(row: Row) -> None:
    """The server serves a file once; the disk's trouble must not cost the paid generation."""
    row.ai.fetch_errors = [SpoolUnavailable("disk full")] * 4
    outcome = await row.run()
    assert outcome.outcome == "completed"
    assert row.ai.fetches[:5] == [GLB_URL] * 5  # asked again, each time through a fresh poll
    assert len(row.ai.polled) >= 5
    assert row.storage.uploads  # the model reached Storage


async def test_a_full_disk_that_stays_full_ends_with_the_deadline_not_at_once(row: Row) -> None:
    row.ai.fetch_errors = [SpoolUnavailable("disk full")] * 10_000
    outcome = await row.run(generation_timeout_s=0.3)
    assert outcome.outcome == "failed" and outcome.failure_kind == "timeout"
    assert row.error_message == "Generation timed out after 0.3 seconds."
    assert len(row.ai.fetches) > 1


async def test_a_file_that_came_too_slowly_is_asked_for_once_more(row: Row) -> None:
    row.ai.fetch_errors = [TransferStalled("came at 3 bytes/s")]
    assert (await row.run()).outcome == "completed"
    assert row.ai.fetches[:2] == [GLB_URL, GLB_URL]


async def test_a_file_that_came_too_slowly_twice_fails_the_row_plainly(row: Row) -> None:
    row.ai.fetch_errors = [TransferStalled("came at 3 bytes/s")] * 2
    outcome = await row.run()
    assert outcome.outcome == "failed"
    assert (
        row.error_message
        == "The AI server sent the GLB model too slowly, twice; the generation was given up."
    )
    assert row.storage.uploads == {}


async def test_a_thumbnail_that_is_not_a_picture_is_left_out_and_the_model_is_kept(row: Row) -> None:
    row.ai.files = {THUMBNAIL_URL: b"<html>not a picture</html>"}
    assert (await row.run()).outcome == "completed"
    assert [path for path in row.storage.uploads if "thumbnails" in path] == []
    results = row.store.row(row.job.model_id).results
    assert results is not None and results.thumbnail_url is None


@pytest.mark.parametrize(
    ("head", "content_type"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 16, "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
    ],
)
async def test_a_thumbnail_is_uploaded_as_the_picture_it_is(row: Row, head: bytes, content_type: str) -> None:
    row.ai.files = {THUMBNAIL_URL: head}
    assert (await row.run()).outcome == "completed"
    (thumbnail,) = [value for path, value in row.storage.uploads.items() if "thumbnails" in path]
    assert thumbnail == (head, content_type)


async def test_rows_wait_for_room_in_the_spool_and_give_it_back(tmp_path: Path) -> None:
    """A spool with room for one GLB at a time: the second row fetches after the first lets go."""
    spool = SpoolBudget(limit_bytes=10 * 1024 * 1024)
    first, second = Row(tmp_path / "a", spool), Row(tmp_path / "b", spool)
    first.ai.fetch_gate = asyncio.Event()
    running = asyncio.create_task(first.run())
    await asyncio.wait_for(first.ai.fetch_started.wait(), SAFETY_S)
    waiting = asyncio.create_task(second.run())
    await asyncio.sleep(0.05)
    assert second.ai.fetches == []  # no room while the first row holds the spool
    first.ai.fetch_gate.set()
    assert (await running).outcome == "completed"
    assert (await waiting).outcome == "completed"
    assert spool.used_bytes == 0  # every row gave its room back


async def test_a_failed_fetch_gives_its_room_back(tmp_path: Path) -> None:
    row = Row(tmp_path, SpoolBudget(limit_bytes=10 * 1024 * 1024))
    row.ai.fetch_errors = [TransientError("HTTP 503")] * 3
    outcome = await row.run()
    assert outcome.outcome == "failed"
    assert row.clients.spool.used_bytes == 0


async def test_the_glb_is_refused_when_it_is_not_one(row: Row) -> None:
    row.ai.files = {GLB_URL: b"not a model" + GLB[11:]}
    outcome = await row.run()
    assert outcome.outcome == "failed"
    assert row.error_message == "The AI server returned a file that is not a GLB model."


# -- Storage that cannot take the files yet -------------------------------------------------


async def test_a_finished_generation_waits_for_storage_past_its_deadline_and_completes_when_fixed(
    row: Row,
) -> None:
    state = row.clients.storage_state
    state.update("the bucket ai-models does not exist")
    running = asyncio.create_task(row.run(generation_timeout_s=0.2))
    await asyncio.sleep(0.5)  # longer than the generation's deadline: waiting for Storage is not generating
    assert not running.done()
    assert row.storage.uploads == {} and row.store.row(row.job.model_id).status == "pending"
    state.update(None)
    outcome = await running
    assert outcome.outcome == "completed"
    assert row.storage.uploads


async def test_storage_that_stays_broken_fails_the_row_after_the_hold_naming_the_problem(row: Row) -> None:
    row.clients.storage_state.update("the bucket ai-models does not exist")
    outcome = await row.run(storage_hold_s=0.2)
    assert outcome.outcome == "failed"
    assert row.error_message == (
        "Storage could not be used for 0.2 seconds (the bucket ai-models does not exist); "
        "the model was not kept."
    )


async def test_an_upload_refused_for_the_setup_holds_the_row_until_storage_is_fixed(row: Row) -> None:
    refusal = PermanentError("Storage refused the upload: the bucket does not exist.", kind=STORAGE_SETUP)
    row.storage.upload_errors = [refusal]
    running = asyncio.create_task(row.run())
    await asyncio.wait_for(row.clients.storage_state.wait_unusable(), SAFETY_S)  # the row met the refusal
    assert not running.done()
    assert row.clients.storage_state.problem == "Storage refused the upload: the bucket does not exist"
    row.clients.storage_state.update(None)  # the replica's check finds it fixed
    assert (await running).outcome == "completed"


async def test_a_model_larger_than_the_bucket_takes_fails_before_it_is_downloaded(row: Row) -> None:
    row.ai.polls = [succeeded(result={"glb_file_size": 60 * 1024 * 1024})]
    row.clients.storage_state.update(None, BucketLimits(file_size_limit=50 * 1024 * 1024))
    outcome = await row.run()
    assert outcome.outcome == "failed"
    assert row.error_message == "The GLB model is 60 MiB, more than the 50 MiB the bucket ai-models accepts."
    assert row.ai.fetches == []


async def test_a_bucket_that_refuses_glb_files_fails_the_row_before_it_is_downloaded(row: Row) -> None:
    row.clients.storage_state.update(None, BucketLimits(allowed_mime_types=frozenset({"image/*"})))
    outcome = await row.run()
    assert outcome.outcome == "failed"
    assert row.error_message is not None and "does not accept GLB models" in row.error_message
    assert row.ai.fetches == []


async def test_a_bucket_that_refuses_glb_files_fails_the_row_before_anything_is_generated(row: Row) -> None:
    row.clients.storage_state.update(None, BucketLimits(allowed_mime_types=frozenset({"application/*"})))
    outcome = await row.run()
    assert outcome.outcome == "failed" and outcome.failure_kind == "upload"
    assert row.error_message == (
        "The bucket ai-models does not accept GLB models (model/gltf-binary is not an allowed type)."
    )
    assert row.ai.submit_count == 0  # no generation was paid for


async def test_an_stl_and_thumbnail_the_bucket_refuses_are_left_out_and_the_model_is_kept(
    tmp_path: Path,
) -> None:
    row = Row(tmp_path)
    row.ai.polls = [succeeded(stl_url="https://ai.example/files/m.stl", thumbnail_url=THUMBNAIL_URL)]
    row.ai.files["https://ai.example/files/m.stl"] = b"solid m"
    row.clients.storage_state.update(None, BucketLimits(allowed_mime_types=frozenset({"model/gltf-binary"})))
    outcome = await row.run()
    assert outcome.outcome == "completed"
    assert [path.rsplit(".", 1)[1] for path in row.storage.uploads] == ["glb"]
    assert row.ai.fetches == [GLB_URL]  # nothing fetched that could not be kept
    results = row.store.row(row.job.model_id).results
    assert results is not None and results.stl_storage_path is None and results.thumbnail_url is None


async def test_limits_changed_while_running_are_read_again_and_named_when_the_model_is_refused(
    row: Row,
) -> None:
    now = BucketLimits(file_size_limit=1024)

    async def read_limits() -> BucketLimits:
        return now

    row.clients.storage_state.read_limits = read_limits
    row.storage.upload_errors = [
        PermanentError(
            "Storage refused the upload: the file is larger than the bucket accepts.", kind=BUCKET_LIMIT
        )
    ]
    outcome = await row.run()
    assert outcome.outcome == "failed" and outcome.failure_kind == "upload"
    assert (
        row.error_message
        == f"The GLB model is {human_size(len(GLB))}, more than the 1 KiB the bucket ai-models accepts."
    )
    assert row.clients.storage_state.limits == now  # the next rows know it before they start


async def test_an_optional_file_refused_while_running_is_left_out(row: Row) -> None:
    refusal = PermanentError(
        "Storage refused the upload: the bucket does not accept files of type image/png.", kind=BUCKET_LIMIT
    )
    original = row.storage.upload_file

    async def refuse_pictures(path: str, local_file: Path, content_type: str) -> int:
        if content_type.startswith("image/"):
            raise refusal
        return await original(path, local_file, content_type)

    row.storage.upload_file = refuse_pictures  # type: ignore[method-assign]
    outcome = await row.run()
    assert outcome.outcome == "completed"
    results = row.store.row(row.job.model_id).results
    assert results is not None and results.thumbnail_url is None and results.storage_path

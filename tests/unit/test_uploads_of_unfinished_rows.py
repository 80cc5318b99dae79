"""Files in Storage belong to completed rows only: a row that ends otherwise takes its uploads away."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from listener.core.data import Ending, JobOutcome
from listener.core.generation import run_job
from listener.errors import PermanentError
from tests.unit import fakes
from tests.unit.fakes import OWNER, claimed_job, succeeded

SAFETY_S = 2.0
STL_URL = "https://ai.example/files/task-1/model.stl"


class ObjectStoreWithHook(fakes.FakeObjectStore):
    """Calls `after_upload(path)` once each upload is in; raises `fail_paths` for the paths named."""

    def __init__(self) -> None:
        super().__init__()
        self.after_upload: Callable[[str], None] = lambda path: None
        self.fail_paths: dict[str, BaseException] = {}
        self.hang_after: int | None = None  # uploads after this many never answer

    async def upload_file(self, path: str, local_file: Path, content_type: str) -> int:
        if self.hang_after is not None and len(self.uploads) >= self.hang_after:
            await asyncio.Event().wait()
        if path in self.fail_paths:
            raise self.fail_paths[path]
        size = await super().upload_file(path, local_file, content_type)
        self.after_upload(path)
        return size


def _run(
    tmp_path: Path, store: fakes.FakeJobStore, storage: fakes.FakeObjectStore
) -> asyncio.Task[JobOutcome]:
    job = store.add(claimed_job(), owner=OWNER)
    ai = fakes.FakeModelServer([succeeded(stl_url=STL_URL)])
    return asyncio.ensure_future(
        run_job(job, fakes.clients(store, ai, storage), fakes.generation_settings(tmp_path))
    )


async def test_a_row_its_owner_cancelled_after_the_uploads_keeps_none_of_them(tmp_path: Path) -> None:
    """The cancel lands between the last upload and the completion: the files go with the row."""
    store, storage = fakes.FakeJobStore(), ObjectStoreWithHook()
    job_task = _run(tmp_path, store, storage)
    storage.after_upload = lambda path: store.cancel(next(iter(store.rows)))
    assert await asyncio.wait_for(job_task, SAFETY_S) == JobOutcome(Ending.LOST)
    assert storage.deleted and storage.uploads == {}


async def test_a_row_cancelled_while_it_uploads_removes_what_it_had_uploaded(tmp_path: Path) -> None:
    """The supervisor stops the coroutine of a cancelled row: what it had put in Storage goes."""
    store, storage = fakes.FakeJobStore(), ObjectStoreWithHook()
    storage.hang_after = 1  # the GLB is in; the next upload never answers
    job_task = _run(tmp_path, store, storage)
    for _ in range(200):
        if storage.uploads:
            break
        await asyncio.sleep(0.005)
    store.cancel(next(iter(store.rows)))
    job_task.cancel()
    await asyncio.gather(job_task, return_exceptions=True)
    assert len(storage.deleted) == 1 and storage.uploads == {}


async def test_a_row_that_fails_after_an_upload_keeps_none_of_its_files(tmp_path: Path) -> None:
    store, storage = fakes.FakeJobStore(), ObjectStoreWithHook()
    job = claimed_job()
    storage.fail_paths[f"{job.user_id}/generated-models/{job.model_id}.stl"] = PermanentError("refused")
    store.add(job, owner=OWNER)
    ai = fakes.FakeModelServer([succeeded(stl_url=STL_URL)])
    outcome = await asyncio.wait_for(
        run_job(job, fakes.clients(store, ai, storage), fakes.generation_settings(tmp_path)), SAFETY_S
    )
    assert outcome.outcome == "failed"
    assert storage.deleted == [f"{job.user_id}/generated-models/{job.model_id}.glb"]
    assert storage.uploads == {}


async def test_a_row_taken_over_after_its_uploads_keeps_them_for_the_replica_that_completes_it(
    tmp_path: Path,
) -> None:
    """The other replica uploads to the same paths and completes the row: nothing is removed."""
    store, storage = fakes.FakeJobStore(), ObjectStoreWithHook()
    job_task = _run(tmp_path, store, storage)
    storage.after_upload = lambda path: store.lose(next(iter(store.rows)))
    assert await asyncio.wait_for(job_task, SAFETY_S) == JobOutcome(Ending.LOST)
    assert storage.deleted == [] and storage.uploads

"""In-memory implementations of the Protocols of listener/core/ports.py, and factories for the unit tests."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from listener.core.data import (
    ClaimedJob,
    CompletedColumns,
    ExpiredLeases,
    FinishedRow,
    ImageFile,
    ModelRequest,
    TaskState,
)
from listener.core.ports import GenerationSettings, RowDependencies, WakeUpHandler
from listener.errors import DatabaseUnavailable, FileGone
from listener.metrics import Metrics
from listener.playground.sample_files import build_glb
from listener.retry import RetryPolicy

OWNER = "replica-a"
OTHER_OWNER = "replica-b"
BUCKET = "ai-models"
PUBLIC_BASE_URL = "https://project.supabase.co"
SOURCE_HOST = "images.example.com"
TASK_ID = "task-1"
GLB_URL = "https://ai.example/files/task-1/model.glb"
GLB = build_glb(2048, b"unit")


def _write_file(path: Path, content: bytes) -> int:
    """Writes a small file at once (the fakes' files are a few kilobytes)."""
    path.write_bytes(content)
    return len(content)


def _read_file(path: Path) -> bytes:
    return path.read_bytes()


async def hang() -> None:
    """Never returns; only cancellation ends it."""
    await asyncio.Event().wait()


def claimed_job(**overrides: Any) -> ClaimedJob:
    """A text-to-3D job just claimed for the first time; any field can be overridden."""
    fields: dict[str, Any] = {
        "model_id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "generation_type": "text_to_3d",
        "prompt": "a small red teapot",
        "source_image_url": None,
        "art_style": "realistic",
        "symmetry_mode": None,
        "target_polycount": None,
        "model_name": "Teapot",
        "progress": 0,
        "ai_task_id": None,
        "attempts": 1,
        "poll_failures": 0,
        "submitted_age_s": None,
        "queued_s": 0.01,
    }
    fields.update(overrides)
    return ClaimedJob(**fields)


def generation_settings(tmp_path: Path, **overrides: Any) -> GenerationSettings:
    """Settings with tiny intervals and retries that do not wait."""
    fields: dict[str, Any] = {
        "owner": OWNER,
        "bucket": BUCKET,
        "public_base_url": PUBLIC_BASE_URL,
        "source_hosts": frozenset({SOURCE_HOST}),
        "poll_interval_s": 0.001,
        "max_poll_failures": 10,
        "generation_timeout_s": 10.0,
        "progress_interval_s": 0.0,
        "max_file_bytes": 10 * 1024 * 1024,
        "spool_dir": tmp_path / "spool",
        "retry": RetryPolicy(max_attempts=3).scaled(0),
    }
    fields.update(overrides)
    return GenerationSettings(**fields)


def in_progress(progress: object) -> TaskState:
    return TaskState("IN_PROGRESS", progress)


def succeeded(glb_url: str | None = GLB_URL, **fields: Any) -> TaskState:
    return TaskState("SUCCEEDED", 100, glb_url=glb_url, **fields)


# -- the database -------------------------------------------------------------------------


@dataclass
class Row:
    """One row of the table as the fake sees it."""

    job: ClaimedJob
    owner: str | None = None
    status: str = "pending"
    progress: int = 0
    ai_task_id: str | None = None
    poll_failures: int = 0
    attempts: int = 0
    error_message: str | None = None
    results: CompletedColumns | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class FakeJobStore:
    """A JobStore and LeaseStore in memory: rows with owner and status, and a record of every write."""

    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, Row] = {}
        self.writes: list[tuple[str, uuid.UUID, Any]] = []
        self.unavailable: set[str] = set()  # methods that raise DatabaseUnavailable
        self.claim_errors: list[BaseException] = []  # raised by the next claims, one each
        self.claims: list[tuple[str, int, int, float]] = []
        self.renewals: list[list[uuid.UUID]] = []
        self.renewal_leases: list[float] = []  # the lease asked for by each renewal
        self.give_up_after: list[int] = []  # the most claims each give_up_jobs was told
        self.sweeps = 0  # how many times release_expired_leases was called
        self.next_expiry_s: float | None = None  # what it says of the next lease to run out
        self.released_owners: list[str] = []
        self.given_up: list[FinishedRow] = []  # returned by the next give_up_jobs
        self.forget_calls: list[tuple[int, int]] = []  # (days kept, most) of each prune

    def add(self, job: ClaimedJob, *, owner: str | None = None) -> ClaimedJob:
        self.rows[job.model_id] = Row(
            job, owner, progress=job.progress, ai_task_id=job.ai_task_id, poll_failures=job.poll_failures
        )
        return job

    def row(self, model_id: uuid.UUID) -> Row:
        return self.rows[model_id]

    def lose(self, model_id: uuid.UUID) -> None:
        """The lease is gone: another replica took the job over."""
        self.rows[model_id].owner = OTHER_OWNER

    def expire(self, model_id: uuid.UUID) -> None:
        """The lease ran out and a sweep handed it back: the job may be claimed again."""
        self.rows[model_id].owner = None

    def cancel(self, model_id: uuid.UUID) -> None:
        """The owner cancelled the row: its job ends, and no replica holds it."""
        self.rows[model_id].owner = None
        self.rows[model_id].status = "cancelled"

    def writes_of(self, name: str) -> list[Any]:
        return [value for method, _, value in self.writes if method == name]

    def resumed(self, model_id: uuid.UUID) -> ClaimedJob:
        """The job as a claim would hand it out now."""
        row = self.rows[model_id]
        return replace(
            row.job,
            progress=row.progress,
            ai_task_id=row.ai_task_id,
            poll_failures=row.poll_failures,
            attempts=row.attempts,
            submitted_age_s=0.0 if row.ai_task_id else None,
        )

    def _write(self, name: str, model_id: uuid.UUID, owner: str, value: Any) -> Row | None:
        """Records the write; the row if it is still `owner`'s."""
        if name in self.unavailable:
            raise DatabaseUnavailable(f"{name}: the database is unreachable")
        self.writes.append((name, model_id, value))
        return self._ours(model_id, owner)

    def _ours(self, model_id: uuid.UUID, owner: str) -> Row | None:
        row = self.rows.get(model_id)
        return row if row is not None and row.owner == owner and row.status == "pending" else None

    def _finished(self, row: Row) -> FinishedRow:
        job = row.job
        return FinishedRow(job.model_id, job.user_id, job.model_name, row.status, row.error_message)

    # JobStore

    async def record_task_id(self, model_id: uuid.UUID, owner: str, task_id: str) -> bool:
        row = self._write("record_task_id", model_id, owner, task_id)
        if row is not None:
            row.ai_task_id = task_id
            return True
        taken_over = self.rows.get(model_id)  # stored for the replica that took the job over
        if taken_over is not None and taken_over.status == "pending" and taken_over.ai_task_id is None:
            taken_over.ai_task_id = task_id
        return False

    async def record_poll_failures(self, model_id: uuid.UUID, owner: str, failures: int) -> bool:
        row = self._write("record_poll_failures", model_id, owner, failures)
        if row is not None:
            row.poll_failures = failures
        return row is not None

    async def write_progress(self, model_id: uuid.UUID, owner: str, progress: int) -> bool:
        row = self._write("write_progress", model_id, owner, progress)
        if row is None or progress <= row.progress:
            return False
        row.progress = progress
        return True

    async def complete(
        self, model_id: uuid.UUID, owner: str, results: CompletedColumns
    ) -> FinishedRow | None:
        row = self._write("complete", model_id, owner, results)
        if row is None:
            return None
        row.status, row.progress, row.results, row.owner = "completed", 100, results, None
        return self._finished(row)

    async def fail(
        self, model_id: uuid.UUID, owner: str, reason: str, metadata: dict[str, Any]
    ) -> FinishedRow | None:
        row = self._write("fail", model_id, owner, reason)
        if row is None:
            return None
        row.status, row.error_message, row.metadata, row.owner = "failed", reason, metadata, None
        return self._finished(row)

    async def release_lease(self, model_id: uuid.UUID, owner: str) -> None:
        row = self._write("release_lease", model_id, owner, owner)
        if row is not None:
            row.owner = None

    async def abandoned(self, model_id: uuid.UUID) -> bool:
        if "abandoned" in self.unavailable:
            raise DatabaseUnavailable("abandoned: the database is unreachable")
        row = self.rows.get(model_id)
        return row is None or row.status in ("cancelled", "failed")

    # LeaseStore

    async def claim(
        self, owner: str, slots: int, per_user_limit: int, lease_s: float, max_claims: int
    ) -> list[ClaimedJob]:
        self.claims.append((owner, slots, per_user_limit, lease_s))
        if self.claim_errors:
            raise self.claim_errors.pop(0)
        if "claim" in self.unavailable:
            raise DatabaseUnavailable("claim: the database is unreachable")
        # As the SQL claim: a user's rows in flight count wherever they run, on any replica.
        held = Counter(row.job.user_id for row in self.rows.values() if row.owner and row.status == "pending")
        claimed: list[ClaimedJob] = []
        for row in self.rows.values():
            free = row.owner is None and row.status == "pending" and row.attempts < max_claims
            if len(claimed) < slots and free and held[row.job.user_id] < per_user_limit:
                row.owner, row.attempts = owner, row.attempts + 1
                held[row.job.user_id] += 1
                claimed.append(self.resumed(row.job.model_id))
        return claimed

    async def renew_leases(
        self, owner: str, model_ids: Sequence[uuid.UUID], lease_s: float
    ) -> set[uuid.UUID]:
        self.renewals.append(list(model_ids))
        self.renewal_leases.append(lease_s)
        if "renew_leases" in self.unavailable:
            raise DatabaseUnavailable("renew_leases: the database is unreachable")
        return {model_id for model_id in model_ids if self._ours(model_id, owner) is not None}

    async def release_leases(self, owner: str) -> int:
        self.released_owners.append(owner)
        mine = [row for row in self.rows.values() if row.owner == owner and row.status == "pending"]
        for row in mine:
            row.owner = None
        return len(mine)

    async def release_expired_leases(self) -> ExpiredLeases:
        self.sweeps += 1
        # A lease the fake lets run out (`expire`) is handed back at once.
        return ExpiredLeases(0, self.next_expiry_s)

    async def give_up_jobs(self, max_claims: int) -> list[FinishedRow]:
        self.give_up_after.append(max_claims)
        given_up, self.given_up = self.given_up, []
        return given_up

    async def forget_old_requests(self, days_kept: int, most: int) -> int:
        self.forget_calls.append((days_kept, most))
        return 0


# -- the AI server ------------------------------------------------------------------------


class FakeModelServer:
    """Answers polls from a script (the last answer repeats); an exception in it is raised."""

    def __init__(self, polls: Iterable[TaskState | BaseException] = ()) -> None:
        self.polls: list[TaskState | BaseException] = list(polls) or [succeeded()]
        self.submits: list[tuple[ModelRequest, ImageFile | None]] = []
        self.submitted_images: list[bytes] = []
        self.submit_errors: list[BaseException] = []  # raised by the next submits, one each
        self.submit_started = asyncio.Event()
        self.submit_gate: asyncio.Event | None = None  # when set, submit waits for it
        self.hang: set[str] = set()  # submit | poll | fetch: never answer
        self.polled: list[str] = []
        self.fetches: list[str] = []
        self.gone: set[str] = set()  # URLs that answer 404
        self.files: dict[str, bytes] = {}  # URL -> content; any other URL serves GLB
        self.fetch_errors: list[BaseException] = []  # raised by the next fetches, one each
        self.fetch_gate: asyncio.Event | None = None  # when set, fetch waits for it
        self.fetch_started = asyncio.Event()

    @property
    def submit_count(self) -> int:
        return len(self.submits)

    async def submit(self, request: ModelRequest, image: ImageFile | None = None) -> str:
        self.submits.append((request, image))
        if image is not None:
            self.submitted_images.append(_read_file(image.path))
        self.submit_started.set()
        if "submit" in self.hang:
            await hang()
        if self.submit_gate is not None:
            await self.submit_gate.wait()
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        return TASK_ID

    async def poll(self, task_id: str) -> TaskState:
        self.polled.append(task_id)
        if "poll" in self.hang:
            await hang()
        answer = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def fetch(self, url: str, dest: Path, max_bytes: int, *, what: str) -> int:
        self.fetches.append(url)
        self.fetch_started.set()
        if "fetch" in self.hang:
            await hang()
        if self.fetch_gate is not None:
            await self.fetch_gate.wait()
        if self.fetch_errors:
            raise self.fetch_errors.pop(0)
        if url in self.gone:
            raise FileGone(f"{what} is no longer on the server (404)")
        return _write_file(dest, self.files.get(url, GLB))


# -- Storage and the web ------------------------------------------------------------------


class FakeObjectStore:
    """Keeps uploads in memory; serves `objects` as source images."""

    def __init__(self) -> None:
        self.uploads: dict[str, tuple[bytes, str]] = {}  # path -> (content, content type)
        self.objects: dict[str, bytes] = {}
        self.downloads: list[str] = []
        self.upload_errors: list[BaseException] = []  # raised by the next uploads, one each
        self.hang_uploads = False
        self.deleted: list[str] = []

    async def upload_file(self, path: str, local_file: Path, content_type: str) -> int:
        if self.hang_uploads:
            await hang()
        if self.upload_errors:
            raise self.upload_errors.pop(0)
        content = _read_file(local_file)
        self.uploads[path] = (content, content_type)
        return len(content)

    async def delete(self, path: str) -> None:
        self.deleted.append(path)
        self.uploads.pop(path, None)

    async def download(self, path: str, dest: Path, max_bytes: int) -> int:
        self.downloads.append(path)
        if path not in self.objects:
            raise FileGone(f"{path} is not in the bucket")
        return _write_file(dest, self.objects[path])

    def public_url(self, path: str) -> str:
        return f"{PUBLIC_BASE_URL}/storage/v1/object/public/{BUCKET}/{path}"


class FakeUrlFetcher:
    """A UrlFetcher serving `files` by URL; any other URL answers 404."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = dict(files or {})
        self.calls: list[str] = []
        self.error: BaseException | None = None  # raised by every call when set
        self.hang = False  # never answer

    async def __call__(self, url: str, dest: Path, max_bytes: int) -> int:
        self.calls.append(url)
        if self.hang:
            await hang()
        if self.error is not None:
            raise self.error
        if url not in self.files:
            raise FileGone(f"{url} answered 404")
        return _write_file(dest, self.files[url])


def clients(
    db: FakeJobStore | None = None,
    ai: FakeModelServer | None = None,
    storage: FakeObjectStore | None = None,
    fetch_url: FakeUrlFetcher | None = None,
) -> RowDependencies:
    """RowDependencies made of fakes (new ones for those not given) and real metrics."""
    return RowDependencies(
        db=db or FakeJobStore(),
        ai=ai or FakeModelServer(),
        storage=storage or FakeObjectStore(),
        fetch_url=fetch_url or FakeUrlFetcher(),
        metrics=Metrics(),
    )


# -- wake-ups -----------------------------------------------------------------------------


class FakeWakeUps:
    """A WakeUpSource the test drives: it delivers what the test says, and dies when told."""

    def __init__(self) -> None:
        self.handler: WakeUpHandler | None = None
        self.ready = False
        self.reconnects = 0
        self.connects = 0
        self.running = asyncio.Event()
        self._death = asyncio.Event()
        self._error: BaseException | None = None

    async def run(self, handler: WakeUpHandler) -> None:
        self.handler, self.ready = handler, True
        self.running.set()
        try:
            await self._death.wait()
            assert self._error is not None
            raise self._error
        finally:
            self.ready = False

    def _deliver(self) -> WakeUpHandler:
        assert self.handler is not None, "the supervisor has not started listening"
        return self.handler

    def connect(self) -> None:
        if self.connects:
            self.reconnects += 1
        self.connects += 1
        self._deliver().on_connect()

    def job(self, model_id: uuid.UUID | str) -> None:
        self._deliver().on_job(str(model_id))

    def cancel(self, model_id: uuid.UUID | str) -> None:
        self._deliver().on_cancel(str(model_id))

    def die(self, error: BaseException) -> None:
        self._error = error
        self._death.set()

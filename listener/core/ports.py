"""What the core needs from the world, as Protocols and plain settings.

The generation and the supervisor see only these; listener/app/service.py wires the real
adapters in, and tests/unit/fakes.py implements them in memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from listener.core.availability import Availability
from listener.core.data import (
    ClaimedJob,
    CompletedColumns,
    ExpiredLeases,
    FinishedRow,
    ImageFile,
    ModelRequest,
    TaskState,
)
from listener.core.milestones import Milestones, NoMilestones
from listener.core.spool import SpoolBudget
from listener.core.storage_state import StorageState
from listener.metrics import Metrics
from listener.retry import RetryPolicy


class JobStore(Protocol):
    """The writes of one row's coroutine; each is made only while the job is still `owner`'s.

    The AI task id is the one exception: see `record_task_id`.
    """

    async def record_task_id(self, model_id: uuid.UUID, owner: str, task_id: str) -> bool:
        """Stores the AI task id before the first poll; False if the job is no longer ours.

        The id is stored for the replica that took the job over, too, if it has none yet.
        """

    async def record_poll_failures(self, model_id: uuid.UUID, owner: str, failures: int) -> bool:
        """Stores the count of failed polls in a row; False if the job is no longer ours."""

    async def write_progress(self, model_id: uuid.UUID, owner: str, progress: int) -> bool:
        """Raises the row's progress; False if it was not raised (not ours, or not higher)."""

    async def complete(
        self, model_id: uuid.UUID, owner: str, results: CompletedColumns
    ) -> FinishedRow | None:
        """Marks the row completed and ends its job; None if no longer ours."""

    async def fail(
        self, model_id: uuid.UUID, owner: str, reason: str, metadata: dict[str, Any]
    ) -> FinishedRow | None:
        """Marks the row failed with `reason` and ends its job; None if no longer ours."""

    async def release_lease(self, model_id: uuid.UUID, owner: str) -> None:
        """Hands one job back so that a replica can take it up again."""

    async def abandoned(self, model_id: uuid.UUID) -> bool:
        """True when no replica will complete the row: its job was cancelled, failed or deleted."""


class LeaseStore(Protocol):
    """The supervisor's statements: claims and the leases that keep them."""

    async def claim(
        self, owner: str, slots: int, per_user_limit: int, lease_s: float, max_claims: int
    ) -> list[ClaimedJob]:
        """Leases up to `slots` claimable jobs to `owner`, fairly; none claimed `max_claims` times."""

    async def renew_leases(
        self, owner: str, model_ids: Sequence[uuid.UUID], lease_s: float
    ) -> set[uuid.UUID]:
        """Extends the leases still ours; returns their ids."""

    async def release_leases(self, owner: str) -> int:
        """Hands every unfinished job of `owner` back; returns how many."""

    async def release_expired_leases(self) -> ExpiredLeases:
        """Hands back the jobs whose lease ran out, so that they can be claimed."""

    async def give_up_jobs(self, max_claims: int) -> list[FinishedRow]:
        """Fails the jobs claimed `max_claims` times without finishing; returns their rows."""

    async def forget_old_requests(self, days_kept: int, most: int) -> int:
        """Prunes up to `most` requests older than `days_kept` from the daily budget's memory."""


class FileLedger(Protocol):
    """Which rows' files are to be removed with no replica running them (cancelled after an upload)."""

    async def files_to_remove(self, most: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Up to `most` rows whose files may be left in Storage: (model id, user id)."""

    async def files_removed(self, model_ids: Sequence[uuid.UUID]) -> None:
        """Their files are gone: the rows are done with."""


class WakeUpHandler(Protocol):
    """What a source of wake-ups calls: the supervisor."""

    def on_job(self, payload: str) -> None:
        """A row may be claimable (the payload is its id, a hint only)."""

    def on_cancel(self, payload: str) -> None:
        """A row may have been cancelled (the payload is its id, a hint only)."""

    def on_connect(self) -> None:
        """The source (re)connected: what it missed meanwhile is lost."""


class WakeUpSource(Protocol):
    """Tells the supervisor when to look for work: PgPool LISTEN, or a fake in tests."""

    @property
    def ready(self) -> bool:
        """True while wake-ups can arrive."""

    @property
    def reconnects(self) -> int:
        """How often the source has had to connect again."""

    async def run(self, handler: WakeUpHandler) -> None:
        """Delivers wake-ups to `handler` until cancelled."""


class ModelServer(Protocol):
    """The AI server: start a generation, ask how it goes, fetch its files."""

    async def submit(self, request: ModelRequest, image: ImageFile | None = None) -> str:
        """Starts a generation; returns the task id."""

    async def poll(self, task_id: str) -> TaskState:
        """The task's current state."""

    async def fetch(self, url: str, dest: Path, max_bytes: int, *, what: str) -> int:
        """Streams one result file to `dest`; returns its size."""


class ObjectStore(Protocol):
    """Storage: where results go and source images come from."""

    async def upload_file(self, path: str, local_file: Path, content_type: str) -> int:
        """Uploads `local_file` to `path`; returns its size."""

    async def download(self, path: str, dest: Path, max_bytes: int) -> int:
        """Writes the object at `path` to `dest`; returns its size."""

    async def delete(self, path: str) -> None:
        """Removes the object at `path`; none there is no error."""

    def public_url(self, path: str) -> str:
        """The object's public URL."""


UrlFetcher = Callable[[str, Path, int], Awaitable[int]]


@dataclass(frozen=True)
class GenerationSettings:
    """The part of the settings a row's coroutine uses."""

    owner: str
    bucket: str
    public_base_url: str
    source_hosts: frozenset[str]
    poll_interval_s: float
    max_poll_failures: int
    generation_timeout_s: float
    progress_interval_s: float
    max_file_bytes: int
    spool_dir: Path
    retry: RetryPolicy
    # How long a finished generation waits for Storage to work before the row fails.
    storage_hold_s: float = 6 * 3600.0


@dataclass(frozen=True)
class RowDependencies:
    """The outside systems a row's coroutine talks to."""

    db: JobStore
    ai: ModelServer
    storage: ObjectStore
    fetch_url: UrlFetcher
    metrics: Metrics
    # Shared by every row of the replica: the spool's room for result files, and whether
    # Storage can take uploads (kept up to date by the replica's Storage check).
    spool: SpoolBudget = field(default_factory=SpoolBudget)
    storage_state: StorageState = field(default_factory=StorageState)
    # Whether the AI server takes submissions now (kept by the replica's check and by rows).
    ai_state: Availability = field(default_factory=Availability)
    # Where the row's lock-screen milestones go (fire and forget; nowhere unless wired).
    milestones: Milestones = field(default_factory=NoMilestones)

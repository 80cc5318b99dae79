"""The plain data a row's life passes around: no I/O, no SDK, nothing but values."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from listener.errors import FailureKind

TERMINAL_TASK_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})


@dataclass(frozen=True)
class ClaimedJob:
    """A row this replica now holds a lease on, with what its coroutine needs."""

    model_id: uuid.UUID
    user_id: uuid.UUID
    generation_type: str
    prompt: str | None
    source_image_url: str | None
    art_style: str | None
    symmetry_mode: str | None
    target_polycount: float | None
    model_name: str
    progress: int
    ai_task_id: str | None
    attempts: int
    poll_failures: int
    submitted_age_s: float | None
    queued_s: float


@dataclass(frozen=True)
class FinishedRow:
    """A row that reached a terminal status: what the push needs."""

    model_id: uuid.UUID
    user_id: uuid.UUID
    model_name: str
    status: str
    error_message: str | None


@dataclass(frozen=True)
class CompletedColumns:
    """The columns a completed row gets."""

    storage_path: str
    download_url: str
    file_size: int
    stl_storage_path: str | None
    stl_download_url: str | None
    thumbnail_url: str | None
    model_dimensions: dict[str, Any] | None
    generation_metadata: dict[str, Any]


@dataclass(frozen=True)
class ModelRequest:
    """What is asked of the AI server for one row, once validated."""

    task: str  # text_to_3d | image_to_3d
    prompt: str | None = None
    art_style: str | None = None
    symmetry_mode: str | None = None
    target_polycount: int | None = None


@dataclass(frozen=True)
class ImageFile:
    """The source image of an image-to-3D request, spooled to disk and ready to send."""

    path: Path
    filename: str
    content_type: str


@dataclass(frozen=True)
class TaskState:
    """One poll's answer."""

    status: str  # PENDING | IN_PROGRESS | SUCCEEDED | FAILED | CANCELED
    progress: object
    glb_url: str | None = None
    stl_url: str | None = None
    thumbnail_url: str | None = None
    dimensions: dict[str, Any] | None = None
    failure_reason: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """True once the task will not change any more."""
        return self.status in TERMINAL_TASK_STATUSES


@dataclass(frozen=True)
class ExpiredLeases:
    """What a sweep handed back, and how soon the next lease held runs out (None: none held)."""

    released: int
    next_expiry_s: float | None


@dataclass(frozen=True)
class ResultPaths:
    """Where a row's files live in the bucket: the app reads them from these paths."""

    glb: str
    stl: str
    thumbnail: str

    @classmethod
    def of(cls, user_id: uuid.UUID, model_id: uuid.UUID) -> ResultPaths:
        """The paths of one row's files."""
        return cls(
            glb=f"{user_id}/generated-models/{model_id}.glb",
            stl=f"{user_id}/generated-models/{model_id}.stl",
            thumbnail=f"{user_id}/thumbnails/{model_id}.png",
        )


class Ending(enum.StrEnum):
    """How a row's coroutine ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    LOST = "lost"  # no longer this replica's: cancelled, deleted or taken over
    RELEASED = "released"  # handed back to be claimed again (the database or the AI server away)


@dataclass(frozen=True)
class JobOutcome:
    """How a row's coroutine ended, the row if it reached a terminal status, and why it failed."""

    outcome: Ending
    finished: FinishedRow | None = None
    failure_kind: FailureKind | None = None

"""What a row's coroutine needs from the world, as Protocols and plain settings.

The generation logic sees only these; listener/service.py wires the real clients in.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from listener.ai_client import ModelRequest, TaskState
from listener.db import FinishedModel, Results
from listener.metrics import Metrics
from listener.retry import RetryPolicy


class JobStore(Protocol):
    async def record_task_id(self, model_id: uuid.UUID, owner: str, task_id: str) -> bool: ...
    async def record_poll_failures(self, model_id: uuid.UUID, owner: str, failures: int) -> bool: ...
    async def write_progress(self, model_id: uuid.UUID, owner: str, progress: int) -> bool: ...
    async def complete(self, model_id: uuid.UUID, owner: str, results: Results) -> FinishedModel | None: ...
    async def fail(
        self, model_id: uuid.UUID, owner: str, reason: str, metadata: dict[str, Any]
    ) -> FinishedModel | None: ...
    async def release_lease(self, model_id: uuid.UUID, owner: str) -> None: ...


class ModelServer(Protocol):
    async def submit(self, request: ModelRequest, image: tuple[Path, str, str] | None = None) -> str: ...
    async def poll(self, task_id: str) -> TaskState: ...
    async def fetch(self, url: str, dest: Path, max_bytes: int, *, what: str) -> int: ...


class ObjectStore(Protocol):
    async def upload_file(self, path: str, local_file: Path, content_type: str) -> int: ...
    async def download(self, path: str, dest: Path, max_bytes: int) -> int: ...
    def public_url(self, path: str) -> str: ...


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


@dataclass(frozen=True)
class Clients:
    """The outside systems a row's coroutine talks to."""

    db: JobStore
    ai: ModelServer
    storage: ObjectStore
    fetch_url: UrlFetcher
    metrics: Metrics

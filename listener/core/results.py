"""A finished task's files: fetched once into the spool (and again through a fresh poll when
they are lost), checked, then uploaded to Storage under the app's paths."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from listener.core.data import ClaimedJob, CompletedColumns, ResultPaths, TaskState
from listener.core.glb import verify_glb
from listener.core.images import image_type
from listener.core.ports import GenerationSettings, RowDependencies
from listener.errors import (
    BUCKET_LIMIT,
    STORAGE_SETUP,
    FailureKind,
    FileGone,
    ListenerError,
    PermanentError,
    SpoolUnavailable,
    TransferStalled,
    TransientError,
)
from listener.sizes import MIB

log = logging.getLogger(__name__)

# How often a result file that failed (served once, then deleted) is asked for, in all.
FETCH_ROUNDS = 3
# A file that came too slowly is asked for once more, then given up.
STALLED_ROUNDS = 2
# The largest STL and thumbnail accepted (the GLB's limit is LISTENER_MAX_FILE_BYTES).
STL_MAX_BYTES = 512 * MIB
THUMBNAIL_MAX_BYTES = 10 * MIB
# The longest wait between two tries while the spool's disk cannot take a file.
SPOOL_RETRY_MAX_S = 60.0
GLB_TYPE, STL_TYPE = "model/gltf-binary", "application/octet-stream"
WHAT = {"glb": "GLB model", "stl": "STL file", "thumbnail": "thumbnail"}
# The type each file is uploaded with; a thumbnail's is read from its bytes once fetched
# (PNG, as the app's path for it says, until then).
TYPES = {"glb": GLB_TYPE, "stl": STL_TYPE, "thumbnail": "image/png"}


@dataclass(frozen=True)
class SpooledResults:
    """The spooled files of a finished task, and the task's last state."""

    glb: Path
    stl: Path | None
    thumbnail: Path | None
    thumbnail_type: str | None
    state: TaskState


class ResultFiles:
    """Fetches and uploads the files of one row; what it holds of the spool is given back by `release`."""

    def __init__(
        self,
        job: ClaimedJob,
        clients: RowDependencies,
        settings: GenerationSettings,
        spool: Path,
        poll: Callable[[], Awaitable[TaskState]],
        deadline_paused: Callable[[], AbstractAsyncContextManager[None]],
    ) -> None:
        self.job = job
        self.clients = clients
        self.settings = settings
        self.spool = spool
        self.poll = poll
        # Waiting for Storage to be fixed is not generating: the row's deadline stops meanwhile.
        self.deadline_paused = deadline_paused
        self.held_bytes = 0
        # What this coroutine put in Storage: removed again if the row ends without completing.
        self.uploaded: list[str] = []

    async def fetch_all(self, state: TaskState) -> SpooledResults:
        """Spools the GLB (required, and checked), then the STL and the thumbnail if offered."""
        self._check_bucket_takes_the_model(state.result.get("glb_file_size"))
        glb, state = await self._fetch(state, "glb", required=True)
        assert glb is not None
        verify_glb(glb)
        stl = thumbnail = None
        if not self._bucket_refuses_optional("stl", state.result.get("stl_file_size")):
            stl, state = await self._fetch(state, "stl", required=False)
        if not self._bucket_refuses_optional("thumbnail"):
            thumbnail, state = await self._fetch(state, "thumbnail", required=False)
        thumbnail_type = image_type(thumbnail) if thumbnail else None
        if thumbnail and thumbnail_type is None:
            log.warning("thumbnail_not_an_image")  # the model is kept; the picture is not
            thumbnail = None
        return SpooledResults(glb, stl, thumbnail, thumbnail_type, state)

    async def upload_all(self, fetched: SpooledResults, task_id: str | None) -> CompletedColumns:
        """Uploads the spooled files under the app's paths; returns the columns of the completed row."""
        await self._wait_for_storage()
        paths = ResultPaths.of(self.job.user_id, self.job.model_id)
        glb_path = paths.glb
        size = await self._upload("glb", glb_path, fetched.glb, GLB_TYPE)
        assert size is not None  # the GLB is required: refused, it raised
        stl_path = await self._upload_optional("stl", paths.stl, fetched.stl, STL_TYPE)
        thumbnail_path = await self._upload_optional(
            "thumbnail", paths.thumbnail, fetched.thumbnail, fetched.thumbnail_type
        )
        public_url = self.clients.storage.public_url
        return CompletedColumns(
            storage_path=glb_path,
            download_url=public_url(glb_path),
            file_size=size,
            stl_storage_path=stl_path,
            stl_download_url=public_url(stl_path) if stl_path else None,
            thumbnail_url=public_url(thumbnail_path) if thumbnail_path else None,
            model_dimensions=fetched.state.dimensions,
            generation_metadata={"ai_task_id": task_id, "ai_result": fetched.state.result},
        )

    async def discard(self) -> None:
        """Removes from Storage what this coroutine uploaded; a failure is logged, not raised."""
        for path in self.uploaded:
            try:
                await self.settings.retry.call(functools.partial(self.clients.storage.delete, path))
            except ListenerError as exc:
                log.warning("upload_not_removed", extra={"path": path, "error": str(exc)})
        log.info("uploads_removed", extra={"count": len(self.uploaded)})
        self.uploaded = []

    def release(self) -> None:
        """Gives the spool's room back (the row's files are about to be deleted)."""
        self.clients.spool.release(self.held_bytes)
        self.held_bytes = 0

    async def _fetch(self, state: TaskState, kind: str, *, required: bool) -> tuple[Path | None, TaskState]:
        """Spools one file; a lost, stalled or unspoolable file is asked for again through a fresh poll."""
        what = WHAT[kind]
        failures = stalls = spool_waits = 0
        while True:
            url = getattr(state, f"{kind}_url")
            if url is None:
                if required:
                    raise PermanentError(
                        f"The AI server finished but offered no {what} the listener may fetch."
                    )
                return None, state
            try:
                return await self._fetch_within_budget(url, kind), state
            except SpoolUnavailable as exc:
                # The local disk's trouble, not the generation's: wait, then ask for the file
                # again (the server makes it anew for a fresh poll). The deadline bounds this.
                spool_waits += 1
                wait_s = min(SPOOL_RETRY_MAX_S, self.settings.poll_interval_s * 2**spool_waits)
                log.warning(
                    "spool_unavailable", extra={"kind": kind, "error": str(exc), "retry_in_s": wait_s}
                )
                await asyncio.sleep(wait_s)
            except TransferStalled as exc:
                stalls += 1
                log.warning("result_fetch_stalled", extra={"kind": kind, "error": str(exc)})
                if stalls >= STALLED_ROUNDS:
                    if not required:
                        return None, state
                    raise PermanentError(
                        f"The AI server sent the {what} too slowly, twice; the generation was given up."
                    ) from exc
            except TransientError as exc:
                failures += 1
                log.warning("result_fetch_failed", extra={"kind": kind, "error": str(exc)})
                if failures >= FETCH_ROUNDS:
                    if not required:
                        return None, state
                    detail = "it was gone" if isinstance(exc, FileGone) else str(exc)
                    raise PermanentError(
                        f"The {what} could not be fetched from the AI server ({detail})."
                    ) from exc
            state = await self.poll()
            if state.status != "SUCCEEDED":
                raise PermanentError(f"The AI server lost the finished model (status {state.status}).")

    async def _fetch_within_budget(self, url: str, kind: str) -> Path:
        """Fetches into the spool once the spool's budget has room for the largest such file."""
        limit = {"glb": self.settings.max_file_bytes, "stl": STL_MAX_BYTES, "thumbnail": THUMBNAIL_MAX_BYTES}[
            kind
        ]
        limit = min(limit, self.settings.max_file_bytes)
        self.spool.mkdir(parents=True, exist_ok=True)
        dest = self.spool / f"result.{kind}"
        granted = await self.clients.spool.acquire(limit, wait=self.held_bytes == 0)
        try:
            size = await self.clients.ai.fetch(url, dest, limit, what=WHAT[kind])
        except BaseException:
            self.clients.spool.release(granted)
            raise
        kept = min(size, granted)
        self.clients.spool.release(granted - kept)
        self.held_bytes += kept
        return dest

    def check_bucket_takes_the_model(self) -> None:
        """Fails, before anything is submitted, a row whose GLB the bucket's own types refuse."""
        self._check_bucket_takes_the_model(None)

    def _check_bucket_takes_the_model(self, size: object) -> None:
        """Fails a GLB of this type and size (None: not known yet) the bucket's own limits refuse."""
        known = size if isinstance(size, int | float) else None
        why = self.clients.storage_state.limits.refusal(self.settings.bucket, WHAT["glb"], GLB_TYPE, known)
        if why is not None:
            raise PermanentError(f"{why[0].upper()}{why[1:]}.", kind=FailureKind.UPLOAD)

    def _bucket_refuses_optional(
        self, kind: str, size: object = None, content_type: str | None = None
    ) -> bool:
        """True (and logged) when the bucket's own limits refuse this STL or thumbnail: it is left out."""
        known = size if isinstance(size, int | float) else None
        limits = self.clients.storage_state.limits
        why = limits.refusal(self.settings.bucket, WHAT[kind], content_type or TYPES[kind], known)
        if why is not None:
            log.warning("optional_file_skipped", extra={"kind": kind, "reason": why})
        return why is not None

    async def _wait_for_storage(self) -> None:
        """Returns once Storage can take uploads; fails the row after LISTENER_STORAGE_HOLD of waiting."""
        state = self.clients.storage_state
        if state.usable:
            return
        log.warning("upload_held", extra={"problem": state.problem})
        async with self.deadline_paused():
            try:
                async with asyncio.timeout(self.settings.storage_hold_s):
                    await state.wait_usable()
            except TimeoutError:
                raise PermanentError(
                    f"Storage could not be used for {human_duration(self.settings.storage_hold_s)} "
                    f"({state.problem}); the model was not kept.",
                    kind=FailureKind.UPLOAD,
                ) from None
        log.info("upload_released")

    async def _upload_optional(
        self, kind: str, path: str, local: Path | None, content_type: str | None
    ) -> str | None:
        """Uploads an STL or thumbnail if there is one; its path, or None when there is none in Storage."""
        if local is None or content_type is None:
            return None
        return path if await self._upload(kind, path, local, content_type) is not None else None

    async def _upload(self, kind: str, path: str, local: Path, content_type: str) -> int | None:
        """Uploads one file; None when the bucket's own limits refuse an optional one (it is left out)."""
        try:
            local_size = (await asyncio.to_thread(local.stat)).st_size
        except OSError:
            local_size = None  # the upload says what is wrong with the file
        if kind == "glb":
            self._check_bucket_takes_the_model(local_size)
        elif self._bucket_refuses_optional(kind, local_size, content_type):
            return None
        while True:
            try:
                size = await self.settings.retry.call(
                    lambda: self.clients.storage.upload_file(path, local, content_type)
                )
                break
            except PermanentError as exc:
                if exc.kind == BUCKET_LIMIT:
                    # The limits changed since they were last read: read them now, for this row
                    # and the next, and say which one refused the file.
                    await self.clients.storage_state.reread_limits()
                    if kind != "glb":
                        if not self._bucket_refuses_optional(kind, local_size, content_type):
                            log.warning("optional_file_skipped", extra={"kind": kind, "reason": str(exc)})
                        return None
                    self._check_bucket_takes_the_model(local_size)
                    raise PermanentError(str(exc), kind=FailureKind.UPLOAD) from exc
                if exc.kind != STORAGE_SETUP:
                    raise
                # The keys, the bucket or the region are wrong: hold the row until they are fixed.
                self.clients.storage_state.update(str(exc).rstrip("."))
                await self._wait_for_storage()
            except TransientError as exc:
                raise PermanentError(
                    f"Storage kept failing the upload; the last answer was: {str(exc).rstrip('.')}."
                ) from exc
        self.uploaded.append(path)
        self.clients.metrics.bytes_uploaded.inc(size)
        return size


def human_duration(seconds: float) -> str:
    """`6 hours`, `90 minutes`, `45 seconds`."""
    if seconds >= 3600 and seconds % 3600 == 0:
        hours = int(seconds // 3600)
        return f"{hours} hour{'s' if hours != 1 else ''}"
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"

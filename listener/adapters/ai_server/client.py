"""The AI server edge: submit a generation, poll it, fetch its files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from listener.adapters.downloads import MinimumRate, download
from listener.core.data import ImageFile, ModelRequest, TaskState
from listener.errors import AIServerUnreachable, FailureKind, PermanentError, TransientError, UnknownTask
from listener.redact import capped, for_users
from listener.sizes import MIB
from listener.urls import origin_of

log = logging.getLogger(__name__)

SUBMIT_PATH = "/v1/process/modelling"
# Sent with every request; the AI server requires them. No user id: with one, the server
# would insert a duplicate row of its own.
_COMMON_FIELDS: dict[str, Any] = {
    "output": {"format": "glb", "unit": "mm", "scale": 1},
    "printer": {"device_uuid": None, "auto_slice": False, "print": False},
    "metadata": {"source": "listener"},
}
_GLB_URL_FIELDS = ("glb_download_url", "download_url", "result_glb_url")
_THUMBNAIL_URL_FIELDS = ("thumbnail_download_url", "thumbnail_url")
# The documented result fields kept in generation_metadata, each with the type it must have.
_KEPT_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "glb_file_size": (int, float),
    "stl_file_size": (int, float),
    "dimensions": (dict,),
}
# An answer is read whole before it is parsed: no more than this.
MAX_ANSWER_BYTES = 4 * MIB
# How long the reachability probe waits for a connection to open.
CONNECT_PROBE_S = 3.0
_KEPT_DIMENSIONS_BYTES = 4096
_MAX_URL_CHARS = 4096
# What the owner reads when the AI server refuses; its own words go to the log only.
_REFUSED = {
    "submitting the request": "The AI server refused the request.",
    "polling the task": "The AI server refused to report on the generation.",
}


# A submission that may have started a generation is not sent again: it would start a second one.
_MAYBE_SUBMITTED = (
    "The AI server stopped answering while it received the request; it was not sent again, "
    "so that the model is not generated twice."
)
# Answers to a submission that say it was not taken on, so it may be sent again.
_SUBMIT_RETRYABLE = frozenset({408, 429, 502, 503})


def request_fields(request: ModelRequest) -> dict[str, Any]:
    """The JSON fields sent for `request`, optional ones only when set."""
    body: dict[str, Any] = {"task": request.task}
    for name in ("prompt", "art_style", "symmetry_mode", "target_polycount"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    return body | _COMMON_FIELDS


class AIClient:
    """HTTP client of the AI server; result files only from its own origin or listed ones."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        submit_session: aiohttp.ClientSession | None = None,
        result_origins: frozenset[str] = frozenset(),
        least_rate: MinimumRate | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        # Submissions are not retried once they may have reached the server, so they should not
        # ride on a kept-alive connection the server may have closed: give them fresh ones.
        self.submit_session = submit_session or session
        # Scheme, host and port, all three: another port of the same host is another server.
        self.result_origins = result_origins | {origin_of(self.base_url)}
        self.least_rate = least_rate

    @property
    def address(self) -> str:
        """`host:port` of the AI server."""
        parts = urlsplit(self.base_url)
        return f"{parts.hostname or '127.0.0.1'}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    async def accepts_connections(self) -> bool:
        """True when a TCP connection to the server opens (nothing is sent on it)."""
        host, _, port = self.address.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), CONNECT_PROBE_S)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def submit(self, request: ModelRequest, image: ImageFile | None = None) -> str:
        """Starts a generation; returns the task id."""
        url = f"{self.base_url}{SUBMIT_PATH}"
        params = {"async_mode": "true"}
        try:
            if image is None:
                async with self.submit_session.post(
                    url, params=params, json=request_fields(request)
                ) as response:
                    envelope = await _submit_envelope(response)
            else:
                with image.path.open("rb") as image_file:
                    form = aiohttp.FormData()
                    form.add_field("task", request.task)
                    form.add_field(
                        "image_file", image_file, filename=image.filename, content_type=image.content_type
                    )
                    form.add_field(
                        "json", json.dumps(request_fields(request)), content_type="application/json"
                    )
                    async with self.submit_session.post(url, params=params, data=form) as response:
                        envelope = await _submit_envelope(response)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # The connection was never made, so the request never reached the server: safe to send again.
            raise AIServerUnreachable(f"the AI server could not be reached: {type(exc).__name__}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PermanentError(_MAYBE_SUBMITTED, kind=FailureKind.SUBMIT) from exc
        data = envelope.get("data") or {}
        task_id = data.get("task_id") or envelope.get("task_id")
        if not task_id:
            raise PermanentError(
                "The AI server accepted the request but gave no task id.", kind=FailureKind.SUBMIT
            )
        return str(task_id)

    async def poll(self, task_id: str) -> TaskState:
        """The task's current state."""
        try:
            async with self.session.get(f"{self.base_url}{SUBMIT_PATH}/{task_id}") as response:
                if response.status == 500:
                    raise UnknownTask(f"the AI server answered 500 for task {task_id}")
                envelope = await _envelope(response, "polling the task")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"polling the AI server failed: {type(exc).__name__}") from exc
        return self._task_state(envelope.get("data") or {})

    async def fetch(self, url: str, dest: Path, max_bytes: int, *, what: str) -> int:
        """Streams one result file to `dest`; returns its size."""
        return await download(self.session, url, dest, max_bytes, what=what, least_rate=self.least_rate)

    def _task_state(self, data: dict[str, Any]) -> TaskState:
        raw = data.get("raw") if isinstance(data.get("raw"), dict) else {}
        task_error = raw.get("task_error") if isinstance(raw, dict) else None
        reason = task_error.get("message") if isinstance(task_error, dict) else None
        dimensions = data.get("dimensions")
        return TaskState(
            status=str(data.get("status", ""))[:32].upper(),
            progress=data.get("progress"),
            glb_url=self._result_url(data, _GLB_URL_FIELDS),
            stl_url=self._result_url(data, ("stl_download_url",)),
            thumbnail_url=self._result_url(data, _THUMBNAIL_URL_FIELDS),
            dimensions=dimensions if _kept(dimensions, (dict,)) else None,
            # The provider's reason is shown to the owner: short, and without hosts or addresses.
            failure_reason=(for_users(str(reason)) or None) if reason else None,
            result={name: data[name] for name, types in _KEPT_FIELDS.items() if _kept(data.get(name), types)},
        )

    def _result_url(self, data: dict[str, Any], names: tuple[str, ...]) -> str | None:
        """The first usable URL among `names`: on an allowed origin, or a path joined to the server's URL."""
        for name in names:
            value = data.get(name)
            if not isinstance(value, str) or not value or len(value) > _MAX_URL_CHARS:
                continue
            url = urljoin(self.base_url + "/", value) if value.startswith("/") else value
            if origin_of(url) in self.result_origins:
                return url
            log.warning(
                "result_url_refused", extra={"field": name, "origin": capped(origin_of(url) or "?", 200)}
            )
        return None


def _kept(value: object, types: tuple[type, ...]) -> bool:
    """True for a value of `types` small enough to keep (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, types):
        return False
    if isinstance(value, dict):
        try:
            return len(json.dumps(value)) <= _KEPT_DIMENSIONS_BYTES
        except (TypeError, ValueError):
            return False
    return True


async def _submit_envelope(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The answer to a submission: retryable only where the server surely did not start one."""
    if response.status >= 500 and response.status not in _SUBMIT_RETRYABLE:
        raise PermanentError(_MAYBE_SUBMITTED, kind=FailureKind.SUBMIT)
    return await _envelope(response, "submitting the request")


async def _envelope(response: aiohttp.ClientResponse, doing: str) -> dict[str, Any]:
    """The JSON envelope of a 200 answer; errors mapped to Transient or Permanent."""
    if response.status in (408, 429) or response.status >= 500:
        raise TransientError(f"{doing}: the AI server answered HTTP {response.status}")
    body = await _read_capped(response, doing)
    try:
        envelope = json.loads(body)
    except ValueError as exc:
        raise TransientError(f"{doing}: the AI server answered something that is not JSON") from exc
    if not isinstance(envelope, dict):
        raise TransientError(f"{doing}: the AI server answered an unexpected shape")
    if response.status >= 400 or envelope.get("status") == "error":
        # Its words may name its database, hosts or keys: logged (scrubbed, capped), never shown.
        log.warning(
            "ai_server_refused",
            extra={
                "doing": doing,
                "http_status": response.status,
                "detail": capped(str(envelope.get("error"))),
            },
        )
        raise PermanentError(_REFUSED[doing], kind=FailureKind.UPSTREAM)
    return envelope


async def _read_capped(response: aiohttp.ClientResponse, doing: str) -> bytes:
    """The whole body, unless it is larger than MAX_ANSWER_BYTES: then PermanentError."""
    too_large = PermanentError(
        f"The AI server answered with more than {MAX_ANSWER_BYTES // MIB} MiB while {doing}, "
        "more than the listener reads.",
        kind=FailureKind.UPSTREAM,
    )
    if response.content_length is not None and response.content_length > MAX_ANSWER_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)

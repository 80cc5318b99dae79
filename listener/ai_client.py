"""The AI server edge: submit a generation, poll it, fetch its files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from listener.downloads import download
from listener.errors import PermanentError, TransientError, UnknownTask
from listener.model import ImageFile, ModelRequest, TaskState

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
# Result fields kept in generation_metadata: everything but the one-shot URLs.
_NOT_KEPT = frozenset({*_GLB_URL_FIELDS, *_THUMBNAIL_URL_FIELDS, "stl_download_url"})


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
    """HTTP client of the AI server; result files only from its own host or allowed ones."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        submit_session: aiohttp.ClientSession | None = None,
        result_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        # Submissions are not retried once they may have reached the server, so they should not
        # ride on a kept-alive connection the server may have closed: give them fresh ones.
        self.submit_session = submit_session or session
        self.result_hosts = result_hosts | {urlsplit(self.base_url).hostname or ""}

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
            raise TransientError(f"the AI server could not be reached: {type(exc).__name__}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PermanentError(_MAYBE_SUBMITTED, kind="submit") from exc
        data = envelope.get("data") or {}
        task_id = data.get("task_id") or envelope.get("task_id")
        if not task_id:
            raise PermanentError("The AI server accepted the request but gave no task id.", kind="submit")
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
        return await download(self.session, url, dest, max_bytes, what=what)

    def _task_state(self, data: dict[str, Any]) -> TaskState:
        raw = data.get("raw") if isinstance(data.get("raw"), dict) else {}
        task_error = raw.get("task_error") if isinstance(raw, dict) else None
        reason = task_error.get("message") if isinstance(task_error, dict) else None
        dimensions = data.get("dimensions")
        return TaskState(
            status=str(data.get("status", "")).upper(),
            progress=data.get("progress"),
            glb_url=self._result_url(data, _GLB_URL_FIELDS),
            stl_url=self._result_url(data, ("stl_download_url",)),
            thumbnail_url=self._result_url(data, _THUMBNAIL_URL_FIELDS),
            dimensions=dimensions if isinstance(dimensions, dict) else None,
            failure_reason=str(reason) if reason else None,
            result={k: v for k, v in data.items() if k not in _NOT_KEPT},
        )

    def _result_url(self, data: dict[str, Any], names: tuple[str, ...]) -> str | None:
        """The first usable URL among `names`: absolute, or a path joined to the server's URL."""
        for name in names:
            value = data.get(name)
            if not isinstance(value, str) or not value:
                continue
            url = urljoin(self.base_url + "/", value) if value.startswith("/") else value
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.hostname in self.result_hosts:
                return url
        return None


async def _submit_envelope(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The answer to a submission: retryable only where the server surely did not start one."""
    if response.status >= 500 and response.status not in _SUBMIT_RETRYABLE:
        raise PermanentError(_MAYBE_SUBMITTED, kind="submit")
    return await _envelope(response, "submitting the request")


async def _envelope(response: aiohttp.ClientResponse, doing: str) -> dict[str, Any]:
    """The JSON envelope of a 200 answer; errors mapped to Transient or Permanent."""
    if response.status in (408, 429) or response.status >= 500:
        raise TransientError(f"{doing}: the AI server answered HTTP {response.status}")
    try:
        envelope = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError) as exc:
        raise TransientError(f"{doing}: the AI server answered something that is not JSON") from exc
    if not isinstance(envelope, dict):
        raise TransientError(f"{doing}: the AI server answered an unexpected shape")
    if response.status >= 400 or envelope.get("status") == "error":
        message = str(envelope.get("error") or f"HTTP {response.status}")
        raise PermanentError(f"The AI server rejected the request: {message}")
    return envelope

"""A stand-in for the AI server (its HTTP API, async submissions and quirks) for tests and the demo."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.typedefs import Handler

from listener.playground.sample_files import build_glb, build_png, build_stl

_log = logging.getLogger(__name__)

FAIL_MARKER = "[fail]"
CANCEL_MARKER = "[cancel]"
_REQUIRED_OBJECTS = ("output", "printer", "metadata")
_CONTENT_TYPES = {
    "glb": "model/gltf-binary",
    "stl": "application/octet-stream",
    "thumbnail": "image/png",
}
_ERROR_TEXT = {502: "Upstream error", 503: "Service unavailable", 504: "Upstream timeout"}


@dataclass
class SimulatorConfig:
    """Knobs of the simulated AI server; tests may change them while it runs."""

    duration_s: float = 3.0  # from submission to the final status
    duration_spread_s: float = 0.0  # each task takes up to this much longer, fixed by its id
    # A task whose prompt is a key takes that long instead of duration_s.
    durations_by_prompt: dict[str, float] = field(default_factory=dict)
    pending_fraction: float = 0.2  # share of duration_s spent PENDING
    progress_dips: bool = True  # every 4th IN_PROGRESS poll reports a little less than the last
    force_outcome: str | None = None  # "SUCCEEDED", "FAILED" or "CANCELED" for every new task
    failure_message: str = "The prompt was rejected by the content filter."
    relative_urls: bool = False  # file URLs as "/files/<name>" (older builds)
    lose_files_next_n: int = 0  # the next N result files are gone (served elsewhere) when asked for
    lose_files_kind: str | None = None  # ... only files of this kind ("glb", "stl") when set
    legacy_task_id_top_level: bool = False  # submit answer carries task_id beside data
    stl_enabled: bool = True
    thumbnail_enabled: bool = True
    success_poll_delay_s: float = 0.0  # each poll that (re)generates the files waits this long
    file_ttl_after_serve_s: float = 2.0
    glb_size: int = 2048  # about this many bytes per GLB
    keep_produced: bool = True  # keep every file's bytes in `produced` (off for big benchmarks)
    bad_glb: bool = False  # serve bytes that are not a GLB
    truncated_glb: bool = False  # serve a GLB shorter than its header declares
    fail_polls_next_n: int = 0  # the next N polls fail ...
    poll_failure_rate: float = 0.0  # ... and, beyond those, each poll with this chance ...
    poll_error_status: int = 503  # ... with this status,
    poll_drop_connection: bool = False  # ... or by closing the connection without an answer
    fail_submits_next_n: int = 0  # the next N submits fail ...
    submit_error_status: int = 502  # ... with this status (502 upstream error, 504 timeout)
    submit_delay_s: float = 0.0  # each accepted submission is answered this much later (its task runs)
    down: bool = False  # every request answers 503


@dataclass
class Submission:
    """One accepted job submission, as the server received it."""

    task_id: str
    task_type: str
    fields: dict[str, Any]
    image_bytes: bytes | None = None
    image_filename: str | None = None
    image_content_type: str | None = None
    has_authorization: bool = False
    has_metadata_user_id: bool = False
    received_at: float = 0.0  # time.time() when it arrived: its task runs from then on


@dataclass
class _Task:
    submission: Submission
    submitted_at: float
    outcome: str
    generation: int = 0
    last_progress: float = 0.0
    in_progress_polls: int = 0
    files: dict[str, str] = field(default_factory=dict)  # kind -> file name


@dataclass
class _File:
    body: bytes
    content_type: str
    kind: str
    served: bool = False


class _BadRequest(Exception):
    pass


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"status": "error", "error": message}, status=status)


def _require_common(fields: dict[str, Any]) -> None:
    for name in _REQUIRED_OBJECTS:
        if not isinstance(fields.get(name), dict):
            raise _BadRequest(f"{name} is required")


class AISimulator:
    """The simulated AI server: submit, poll and serve-once files over real HTTP."""

    def __init__(self, config: SimulatorConfig | None = None, seed: int | None = None) -> None:
        """Create a simulator; `start()` makes it listen. `seed` fixes which polls fail by chance."""
        self.config = config or SimulatorConfig()
        self.submissions: list[Submission] = []
        self.polls: collections.Counter[str] = collections.Counter()
        self._random = random.Random(seed)
        self.file_fetches: collections.Counter[str] = collections.Counter()
        self.answered_down = 0  # requests answered 503 because the server was down
        self.produced: dict[str, dict[str, bytes]] = {}
        self._tasks: dict[str, _Task] = {}
        self._files: dict[str, _File] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url = ""

    @property
    def base_url(self) -> str:
        """The URL the simulator listens on, like http://127.0.0.1:54321."""
        if not self._base_url:
            raise RuntimeError("the simulator is not started")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 picks a free port) and return the base URL."""
        self._stopping.clear()
        app = web.Application(middlewares=[self._down_middleware])
        app.router.add_post("/v1/process/modelling", self._submit)
        app.router.add_get("/v1/process/modelling/{task_id}", self._poll)
        app.router.add_get("/files/{name}", self._file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_port = self._runner.addresses[0][1]
        self._base_url = f"http://{host}:{bound_port}"
        _log.info("simulator_started", extra={"url": self._base_url})
        return self._base_url

    async def stop(self) -> None:
        """Cancel pending file deletions and slow polls, and close the server."""
        self._stopping.set()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _down_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.config.down:
            self.answered_down += 1
            return _error(503, _ERROR_TEXT[503])
        return await handler(request)

    async def _submit(self, request: web.Request) -> web.Response:
        cfg = self.config
        if cfg.fail_submits_next_n > 0:
            cfg.fail_submits_next_n -= 1
            status = cfg.submit_error_status
            return _error(status, _ERROR_TEXT.get(status, "Injected failure"))
        if request.query.get("async_mode") != "true":
            return _error(400, "the simulator supports only async_mode=true")
        try:
            if request.content_type.startswith("multipart/"):
                submission = await self._read_image_submission(request)
            else:
                submission = await self._read_text_submission(request)
        except _BadRequest as exc:
            return _error(400, str(exc))
        metadata = submission.fields["metadata"]
        submission.has_authorization = hdrs.AUTHORIZATION in request.headers
        submission.has_metadata_user_id = metadata.get("user_id") is not None
        submission.received_at = time.time()
        self.submissions.append(submission)
        self._tasks[submission.task_id] = _Task(
            submission, time.monotonic(), self._choose_outcome(submission)
        )
        if cfg.submit_delay_s > 0:  # the task is under way; only the answer is late
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), cfg.submit_delay_s)
        data: dict[str, Any] = {"task_id": submission.task_id, "status": "PENDING", "progress": 0}
        if cfg.legacy_task_id_top_level:
            del data["task_id"]
            return web.json_response({"status": "ok", "task_id": submission.task_id, "data": data})
        return web.json_response({"status": "ok", "data": data})

    async def _read_text_submission(self, request: web.Request) -> Submission:
        try:
            fields = await request.json()
        except ValueError as exc:
            raise _BadRequest("the body is not valid JSON") from exc
        if not isinstance(fields, dict) or fields.get("task") != "text_to_3d":
            raise _BadRequest("task must be text_to_3d for a JSON body")
        prompt = fields.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise _BadRequest("prompt is required")
        _require_common(fields)
        return Submission(str(uuid.uuid4()), "text_to_3d", fields)

    async def _read_image_submission(self, request: web.Request) -> Submission:
        form: dict[str, str] = {}
        image: tuple[bytes, str | None, str | None] | None = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise _BadRequest("nested multipart is not supported")
            if part.name == "image_file":
                image = (await part.read(), part.filename, part.headers.get(hdrs.CONTENT_TYPE))
            elif part.name:
                form[part.name] = await part.text()
        if form.get("task") != "image_to_3d":
            raise _BadRequest("task must be image_to_3d for a multipart form")
        if image is None or not image[0] or not image[1]:
            raise _BadRequest("image_file is required")
        try:
            fields = json.loads(form.get("json", ""))
        except ValueError as exc:
            raise _BadRequest("json must be a JSON object") from exc
        if not isinstance(fields, dict):
            raise _BadRequest("json must be a JSON object")
        _require_common(fields)
        fields = {"task": "image_to_3d", **fields}
        return Submission(str(uuid.uuid4()), "image_to_3d", fields, *image)

    def _choose_outcome(self, submission: Submission) -> str:
        if self.config.force_outcome:
            return self.config.force_outcome
        metadata = submission.fields["metadata"]
        hints = [submission.fields.get("prompt"), submission.image_filename, *metadata.values()]
        text = " ".join(hint for hint in hints if isinstance(hint, str))
        if FAIL_MARKER in text:
            return "FAILED"
        if CANCEL_MARKER in text:
            return "CANCELED"
        return "SUCCEEDED"

    async def _poll(self, request: web.Request) -> web.Response:
        cfg = self.config
        task_id = request.match_info["task_id"]
        self.polls[task_id] += 1
        if cfg.fail_polls_next_n > 0:
            cfg.fail_polls_next_n -= 1
            injected = True
        else:
            injected = self._random.random() < cfg.poll_failure_rate
        if injected:
            if cfg.poll_drop_connection and request.transport is not None:
                request.transport.close()
            return _error(cfg.poll_error_status, "Injected failure")
        task = self._tasks.get(task_id)
        if task is None:
            return _error(500, "Internal server error")
        status, progress = self._status_of(task)
        data: dict[str, Any] = {"task_id": task_id, "status": status, "progress": progress}
        if status == "SUCCEEDED":
            if self._regenerate_missing_files(task_id, task):
                await self._slow_success_poll()
            data |= self._result_fields(request, task_id, task)
        data["raw"] = self._raw(task_id, task, status, progress)
        return web.json_response({"status": "ok", "data": data})

    def _status_of(self, task: _Task) -> tuple[str, float]:
        share = hashlib.sha256(task.submission.task_id.encode()).digest()[0] / 255
        prompt = task.submission.fields.get("prompt")
        base = self.config.duration_s
        if isinstance(prompt, str):
            base = self.config.durations_by_prompt.get(prompt, base)
        duration = base + self.config.duration_spread_s * share
        elapsed = time.monotonic() - task.submitted_at
        if elapsed >= duration:
            if task.outcome == "SUCCEEDED":
                task.last_progress = 100.0
            return task.outcome, task.last_progress
        if elapsed < duration * self.config.pending_fraction:
            return "PENDING", 0.0
        task.in_progress_polls += 1
        progress = round(min(99.0, 100.0 * elapsed / duration), 1)
        if self.config.progress_dips and task.in_progress_polls % 4 == 0:
            progress = max(0.0, round(task.last_progress - 1.5, 1))
        task.last_progress = progress
        return "IN_PROGRESS", progress

    async def _slow_success_poll(self) -> None:
        # The real server downloads and post-processes the model inside this request.
        delay = self.config.success_poll_delay_s
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _regenerate_missing_files(self, task_id: str, task: _Task) -> bool:
        cfg = self.config
        kinds = ["glb"] + ["stl"] * cfg.stl_enabled + ["thumbnail"] * cfg.thumbnail_enabled
        missing = [kind for kind in kinds if task.files.get(kind) not in self._files]
        if not missing:
            return False
        task.generation += 1
        seed = task_id.encode()
        produced = self.produced.setdefault(task_id, {}) if cfg.keep_produced else {}
        for kind in missing:
            if kind == "glb":
                body = build_glb(cfg.glb_size, seed)
                if cfg.bad_glb:
                    body = b"<html><body>not a model</body></html>\n" * 8
                elif cfg.truncated_glb:
                    body = body[: len(body) // 2]
            else:
                body = build_stl(seed) if kind == "stl" else build_png(seed)
            suffix = "_thumbnail.png" if kind == "thumbnail" else f".{kind}"
            name = f"{task_id}_{task.generation}{suffix}"
            self._files[name] = _File(body, _CONTENT_TYPES[kind], kind)
            task.files[kind] = name
            produced[kind] = body
        return True

    def _result_fields(self, request: web.Request, task_id: str, task: _Task) -> dict[str, Any]:
        prefix = "" if self.config.relative_urls else str(request.url.origin())
        urls = {kind: f"{prefix}/files/{name}" for kind, name in task.files.items()}
        fields: dict[str, Any] = {
            "glb_download_url": urls["glb"],
            "download_url": urls["glb"],
            "result_glb_url": f"https://assets.meshy.example/sim/{task_id}/model.glb",
            "dimensions": self.dimensions(task_id),
        }
        if self.config.stl_enabled and "stl" in urls:
            fields["stl_download_url"] = urls["stl"]
            fields["glb_file_size"] = len(self._files[task.files["glb"]].body)
            fields["stl_file_size"] = len(self._files[task.files["stl"]].body)
        if self.config.thumbnail_enabled and "thumbnail" in urls:
            fields["thumbnail_download_url"] = urls["thumbnail"]
        return fields

    @staticmethod
    def dimensions(task_id: str) -> dict[str, float]:
        """The model's size the server reports for a task (fixed by its id)."""
        digest = hashlib.sha256(task_id.encode()).digest()
        return {"x": 50.0 + digest[0], "y": 50.0 + digest[1], "z": 50.0 + digest[2]}

    def _raw(self, task_id: str, task: _Task, status: str, progress: float) -> dict[str, Any]:
        fields = task.submission.fields
        created_ms = int((time.time() - (time.monotonic() - task.submitted_at)) * 1000)
        finished = status in ("SUCCEEDED", "FAILED", "CANCELED")
        cdn = f"https://assets.meshy.example/sim/{task_id}"
        return {
            "id": task_id,
            "mode": "preview",
            "prompt": fields.get("prompt", ""),
            "art_style": fields.get("art_style", "realistic"),
            "status": status,
            "progress": int(progress),
            "created_at": created_ms,
            "finished_at": int(time.time() * 1000) if finished else 0,
            "model_urls": {"glb": f"{cdn}/model.glb"} if status == "SUCCEEDED" else {},
            "thumbnail_url": f"{cdn}/preview.png" if status == "SUCCEEDED" else "",
            "task_error": {"message": self.config.failure_message if status == "FAILED" else ""},
        }

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.file_fetches[name] += 1
        stored = self._files.get(name)
        lost_kinds = {self.config.lose_files_kind} if self.config.lose_files_kind else {"glb", "stl"}
        if stored is not None and stored.kind in lost_kinds and self.config.lose_files_next_n > 0:
            self.config.lose_files_next_n -= 1
            self._delete_file(name)
            stored = None
        if stored is None:
            return _error(404, "File not found")
        if stored.kind != "thumbnail" and not stored.served:
            stored.served = True
            ttl = self.config.file_ttl_after_serve_s
            loop = asyncio.get_running_loop()
            self._timers[name] = loop.call_later(ttl, self._delete_file, name)
        return web.Response(body=stored.body, content_type=stored.content_type)

    def _delete_file(self, name: str) -> None:
        self._timers.pop(name, None)
        self._files.pop(name, None)


async def serve_forever(
    host: str = "127.0.0.1", port: int = 7000, config: SimulatorConfig | None = None
) -> None:
    """Run the simulator on host:port until cancelled."""
    simulator = AISimulator(config)
    await simulator.start(host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()

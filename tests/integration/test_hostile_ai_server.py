"""The AI server edge against a server that misbehaves, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from listener.adapters.ai_server.client import MAX_ANSWER_BYTES, AIClient
from listener.adapters.downloads import MinimumRate, download
from listener.core.data import ModelRequest
from listener.errors import FileGone, PermanentError, SpoolUnavailable, TransferStalled, TransientError
from listener.playground.sample_files import build_glb
from listener.urls import origin_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
INTERNALS = "connection to db-primary.internal.corp:5432 (10.1.2.3) as user svc_ai failed: password rejected"


class Server:
    """A loopback HTTP server whose routes a test sets; remembers every path asked for."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.asked: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.asked.append(request.path)
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404)
        return await handler(request)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    first, second = Server(), Server()
    await first.start()
    await second.start()
    first.other = second  # type: ignore[attr-defined]
    yield first
    for s in (first, second):
        assert s.runner is not None
        await s.runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def answer(data: object, status: int = 200) -> Handler:
    async def handle(_: web.Request) -> web.Response:
        return web.json_response(data, status=status)

    return handle


def task(**data: object) -> Handler:
    return answer({"status": "ok", "data": {"status": "SUCCEEDED", "progress": 100, **data}})


POLL = "/v1/process/modelling/t-1"


# -- answers ------------------------------------------------------------------------------


async def test_a_refusal_naming_internals_is_logged_and_never_shown(
    server: Server, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    server.routes["/v1/process/modelling"] = answer({"status": "error", "error": INTERNALS}, status=400)
    with (
        caplog.at_level(logging.WARNING, logger="listener.adapters.ai_server.client"),
        pytest.raises(PermanentError) as refused,
    ):
        await AIClient(server.url, http).submit(ModelRequest("text_to_3d", prompt="a lamp"))
    assert str(refused.value) == "The AI server refused the request."
    (logged,) = [r for r in caplog.records if r.getMessage() == "ai_server_refused"]
    assert INTERNALS in logged.__dict__["detail"]  # the operator sees why


async def test_a_refusal_of_a_poll_is_a_plain_sentence(server: Server, http: aiohttp.ClientSession) -> None:
    server.routes[POLL] = answer({"status": "error", "error": INTERNALS}, status=403)
    with pytest.raises(PermanentError, match=r"^The AI server refused to report on the generation\.$"):
        await AIClient(server.url, http).poll("t-1")


async def test_the_providers_reason_is_shown_without_hosts_or_addresses(
    server: Server, http: aiohttp.ClientSession
) -> None:
    reason = f"Model rejected: {INTERNALS} " + "x" * 1000
    server.routes[POLL] = answer(
        {"status": "ok", "data": {"status": "FAILED", "raw": {"task_error": {"message": reason}}}}
    )
    state = await AIClient(server.url, http).poll("t-1")
    assert state.failure_reason is not None and state.failure_reason.startswith("Model rejected:")
    assert len(state.failure_reason) <= 300
    for leak in ("db-primary", "10.1.2.3", "5432"):
        assert leak not in state.failure_reason


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"])
async def test_a_malformed_answer_is_a_failed_poll(
    server: Server, http: aiohttp.ClientSession, body: bytes
) -> None:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    server.routes[POLL] = handle
    with pytest.raises(TransientError):
        await AIClient(server.url, http).poll("t-1")


async def test_a_submission_without_a_task_id_fails_the_row(
    server: Server, http: aiohttp.ClientSession
) -> None:
    server.routes["/v1/process/modelling"] = answer({"status": "ok", "data": {"status": "PENDING"}})
    with pytest.raises(PermanentError, match="gave no task id"):
        await AIClient(server.url, http).submit(ModelRequest("text_to_3d", prompt="a lamp"))


async def test_an_endless_answer_is_cut_off_at_its_cap(server: Server, http: aiohttp.ClientSession) -> None:
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b'{"status": "ok", "data": {"x": "' + b"a" * 65536
        with_room = 4 * MAX_ANSWER_BYTES  # bounded, so the test ends even if the cap failed
        while sent < with_room:
            await response.write(chunk)
            sent += len(chunk)
        return response

    server.routes[POLL] = endless
    with pytest.raises(PermanentError, match="more than 4 MiB"):
        await AIClient(server.url, http).poll("t-1")


async def test_a_huge_declared_answer_is_not_read(server: Server, http: aiohttp.ClientSession) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(2 * 1024**3)})
        await response.prepare(request)
        await response.write(b"{")
        return response

    server.routes[POLL] = huge
    with pytest.raises(PermanentError, match="more than 4 MiB"):
        await AIClient(server.url, http).poll("t-1")


async def test_only_documented_result_fields_are_kept(server: Server, http: aiohttp.ClientSession) -> None:
    server.routes[POLL] = task(
        glb_file_size=2048,
        dimensions={"x": 1.5, "y": 2, "z": 3},
        raw={"huge": "r" * 100_000},
        secret_internal="s",
        progress=float("nan") if False else 250,
    )
    state = await AIClient(server.url, http).poll("t-1")
    assert state.result == {
        "status": "SUCCEEDED",
        "glb_file_size": 2048,
        "dimensions": {"x": 1.5, "y": 2, "z": 3},
    }


@pytest.mark.parametrize("progress", [250, -5, "NaN", "ninety", None, [1], 1e308])
async def test_odd_progress_never_breaks_a_poll(
    server: Server, http: aiohttp.ClientSession, progress: object
) -> None:
    server.routes[POLL] = answer({"status": "ok", "data": {"status": "IN_PROGRESS", "progress": progress}})
    state = await AIClient(server.url, http).poll("t-1")
    assert state.status == "IN_PROGRESS" and not state.finished


# -- where result files may come from -------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{other}/files/m.glb",  # another port of the same host
        "https://127.0.0.1:{port}/files/m.glb",  # another scheme
        "http://localhost:{port}/files/m.glb",  # another name
        "ftp://127.0.0.1:{port}/files/m.glb",
        "file:///etc/passwd",
        "//169.254.169.254/latest/meta-data",  # protocol-relative, to link-local
    ],
)
async def test_result_urls_off_the_servers_origin_are_refused(
    server: Server, http: aiohttp.ClientSession, url: str
) -> None:
    other = server.other.port  # type: ignore[attr-defined]
    server.routes[POLL] = task(glb_download_url=url.format(port=server.port, other=other))
    state = await AIClient(server.url, http).poll("t-1")
    assert state.glb_url is None


async def test_a_listed_origin_is_allowed_and_the_cdn_url_used_when_the_server_has_none(
    server: Server, http: aiohttp.ClientSession
) -> None:
    cdn = server.other  # type: ignore[attr-defined]
    server.routes[POLL] = task(result_glb_url=f"{cdn.url}/cdn/m.glb", glb_download_url=f"{cdn.url}/x.glb")
    plain = await AIClient(server.url, http).poll("t-1")
    assert plain.glb_url is None
    listed = await AIClient(server.url, http, result_origins=frozenset({origin_of(cdn.url) or ""})).poll(
        "t-1"
    )
    assert listed.glb_url == f"{cdn.url}/x.glb"
    server.routes[POLL] = task(result_glb_url=f"{cdn.url}/cdn/m.glb")
    only_cdn = await AIClient(server.url, http, result_origins=frozenset({origin_of(cdn.url) or ""})).poll(
        "t-1"
    )
    assert only_cdn.glb_url == f"{cdn.url}/cdn/m.glb"
    server.routes[POLL] = task(glb_download_url="/files/m.glb")
    assert (await AIClient(server.url, http).poll("t-1")).glb_url == f"{server.url}/files/m.glb"


# -- downloads ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["http://127.0.0.1:{other}/inside", "http://169.254.169.254/latest/meta-data"]
)
async def test_a_redirect_is_never_followed(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path, target: str
) -> None:
    other = server.other  # type: ignore[attr-defined]

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound(target.format(other=other.port))

    server.routes["/files/m.glb"] = redirect
    with pytest.raises(PermanentError, match="HTTP 302"):
        await download(http, f"{server.url}/files/m.glb", tmp_path / "m.glb", 10_000, what="GLB model")
    assert other.asked == []


async def test_a_trickling_file_is_abandoned_below_the_least_rate(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        for _ in range(1000):  # bounded: 1000 bytes at most, one every 20 ms
            await response.write(b"x")
            await asyncio.sleep(0.02)
        return response

    server.routes["/files/m.glb"] = trickle
    rate = MinimumRate(bytes_per_s=1000, window_s=0.3)
    with pytest.raises(TransferStalled):
        await download(
            http, f"{server.url}/files/m.glb", tmp_path / "m.glb", 10_000, what="GLB model", least_rate=rate
        )


async def test_a_file_larger_than_declared_limits_is_refused_before_reading(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(2 * 1024**3)})
        await response.prepare(request)
        await response.write(b"glTF")
        return response

    server.routes["/files/m.glb"] = huge
    with pytest.raises(PermanentError, match="larger than the 1 GiB limit"):
        await download(http, f"{server.url}/files/m.glb", tmp_path / "m.glb", 1024**3, what="GLB model")


async def test_too_little_free_disk_is_the_spools_trouble_not_the_rows(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(free + 1024**3)})
        await response.prepare(request)
        await response.write(b"glTF")
        return response

    server.routes["/files/m.glb"] = big
    with pytest.raises(SpoolUnavailable, match="too little"):
        await download(http, f"{server.url}/files/m.glb", tmp_path / "m.glb", 2**60, what="GLB model")


async def test_a_disk_that_fails_while_writing_keeps_the_generation(
    server: Server, http: aiohttp.ClientSession
) -> None:
    glb = build_glb(4096, b"x")

    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=glb)

    server.routes["/files/m.glb"] = serve
    # /dev/full takes every open and fails every write with ENOSPC, as a full disk does.
    with pytest.raises(SpoolUnavailable, match="spool could not take"):
        await download(http, f"{server.url}/files/m.glb", Path("/dev/full"), 10_000, what="GLB model")


async def test_a_file_served_once_is_gone_the_second_time(
    server: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    served: list[int] = []

    async def once(_: web.Request) -> web.Response:
        if served:
            return web.Response(status=404)
        served.append(1)
        return web.Response(body=json.dumps({"a": 1}).encode())

    server.routes["/files/m.glb"] = once
    await download(http, f"{server.url}/files/m.glb", tmp_path / "m.glb", 10_000, what="GLB model")
    with pytest.raises(FileGone):
        await download(http, f"{server.url}/files/m.glb", tmp_path / "m.glb", 10_000, what="GLB model")

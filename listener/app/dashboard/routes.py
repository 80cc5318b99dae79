"""The dashboard's routes: the page, its files, the JSON API and its live stream, all behind the token."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web

from listener.adapters.postgres.pool import PgPool
from listener.app.dashboard.auth import (
    PAGE_POLICY,
    SAFE_HEADERS,
    USED_LINK,
    WRONG_TOKEN,
    Access,
    TokenGate,
    cross_site,
    from_own_pages,
    refused,
    sign_in_page,
    throttled,
)
from listener.app.dashboard.reads import FILE_COLUMNS, DashboardReads, Filters, window_hours
from listener.errors import DatabaseUnavailable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC = {"app.js": "text/javascript", "charts.js": "text/javascript", "style.css": "text/css"}
LIVE_TICK_S = 1.0  # how often the stream looks for a change
LIVE_RESEND_S = 10.0  # the stream repeats an unchanged state this often (fresh times, a keep-alive)
# A stream is one open page, and each reads the database every second: sixteen is many people
# watching, and keeps streams a small part of the health port's connections. Beyond it a page polls.
MAX_STREAMS = 16
STREAMS_FULL = "too many live streams are open; the page polls instead"
# A sign-in form is a few hundred bytes sent at once; a body still arriving after this is held back.
SIGN_IN_BODY_S = 5.0
UNAVAILABLE = "the database is not answering; the dashboard tries again by itself"


@cache
def static_file(name: str) -> bytes:
    """A file of the dashboard's static/ folder, read once."""
    return resources.files("listener.app.dashboard").joinpath("static", name).read_bytes()


def _json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _signature(snapshot: dict[str, Any]) -> tuple[object, ...]:
    """What a watcher must be told about: a new request, a new end, a row whose status or progress moved."""
    moving = tuple((row["id"], row["status"], row["progress"]) for row in snapshot["in_flight"])
    return snapshot["newest_request"], snapshot["newest_end"], moving


class Dashboard:
    """The dashboard on the health server's application; `install` adds its routes."""

    def __init__(
        self, token: str, reads: DashboardReads, *, allow_http: bool = False, max_streams: int = MAX_STREAMS
    ) -> None:
        self.gate = TokenGate(token, allow_http=allow_http)
        self.reads = reads
        self.max_streams = max_streams
        self._streams = 0
        self._closing = asyncio.Event()

    def install(self, app: web.Application) -> None:
        """Adds the page, its files, the JSON API and the live stream to `app`."""
        add = app.router.add_get
        add("/dashboard", self._page)
        app.router.add_post("/dashboard/sign-in", self._sign_in)
        add("/dashboard/sign-in/{code}", self._sign_in_link)
        app.router.add_post("/dashboard/sign-out", self._sign_out)
        app.router.add_post("/api/sign-in-links", self._guard(self._new_sign_in_link))
        add("/dashboard/static/{name}", self._guard(self._static))
        add("/api/generations", self._guard(self._generations))
        add("/api/generations/{id}", self._guard(self._generation))
        add("/api/generations/{id}/files/{kind}", self._guard(self._file))
        add("/api/charts", self._guard(self._charts))
        add("/api/replicas", self._guard(self._replicas))
        add("/api/live", self._guard(self._live))
        add("/api/events", self._guard(self._events))
        app.on_response_prepare.append(self._safe_headers)
        app.on_shutdown.append(self._close_streams)

    def _guard(self, handler: Handler) -> Handler:
        """`handler` for requests with the token; 401 for the others, 503 while the database is away."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            access = self.gate.check(request)
            if access is Access.THROTTLED:
                return throttled(self.gate, request)
            if access is not Access.GRANTED:
                return refused()
            if request.method == "POST" and not from_own_pages(request):
                return cross_site()
            try:
                return await handler(request)
            except DatabaseUnavailable:
                return _json_error(503, UNAVAILABLE, **{"Retry-After": "2"})

        return guarded

    async def _safe_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith(("/dashboard", "/api/")):
            response.headers.update(SAFE_HEADERS)
            response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)

    async def _close_streams(self, _: web.Application) -> None:
        self._closing.set()

    async def _page(self, request: web.Request) -> web.StreamResponse:
        if self.gate.check(request) is not Access.GRANTED:
            return sign_in_page()
        return web.Response(body=static_file("index.html"), content_type="text/html", charset="utf-8")

    def _signed_in(self, request: web.Request) -> web.Response:
        response = web.Response(status=303, headers={"Location": "/dashboard"})
        self.gate.sign_in(response, request)
        return response

    async def _sign_in(self, request: web.Request) -> web.StreamResponse:
        if not from_own_pages(request):
            return cross_site()
        try:
            async with asyncio.timeout(SIGN_IN_BODY_S):
                form = await request.post()
        except TimeoutError:
            # The connection is being answered, so the health port's guard leaves it to this handler.
            response = _json_error(408, "the form took too long to arrive")
            response.force_close()  # the rest of the body is not waited for
            return response
        given = form.get("token")
        access = self.gate.check_token(request, given.strip() if isinstance(given, str) else None)
        if access is Access.THROTTLED:
            return throttled(self.gate, request, page=True)
        if access is Access.GRANTED:
            return self._signed_in(request)
        return sign_in_page(WRONG_TOKEN)

    async def _sign_in_link(self, request: web.Request) -> web.StreamResponse:
        """A one-time link (from POST /api/sign-in-links) opens a session, then leaves the address bar."""
        if self.gate.sign_in_links.redeem(request.match_info["code"]):
            return self._signed_in(request)
        return sign_in_page(USED_LINK)

    async def _new_sign_in_link(self, request: web.Request) -> web.StreamResponse:
        path = f"/dashboard/sign-in/{self.gate.sign_in_links.issue()}"
        return web.json_response(
            {
                "url": str(request.url.with_path(path).with_query(None)),
                "path": path,
                "expires_in_s": round(self.gate.sign_in_links.lifetime_s),
            },
            status=201,
        )

    async def _sign_out(self, request: web.Request) -> web.StreamResponse:
        if not from_own_pages(request):
            return cross_site()
        response = web.Response(status=303, headers={"Location": "/dashboard"})
        self.gate.sign_out(response, request)
        return response

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC:
            return _json_error(404, "no such file")
        return web.Response(body=static_file(name), content_type=STATIC[name], charset="utf-8")

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        try:
            filters = Filters.parse(request.query)
        except ValueError as exc:
            return _json_error(400, str(exc))
        return web.json_response(await self.reads.generations(filters))

    async def _generation(self, request: web.Request) -> web.StreamResponse:
        model_id = _model_id(request)
        details = None if model_id is None else await self.reads.generation(model_id)
        if details is None:
            return _json_error(404, "no such generation")
        return web.json_response(details)

    async def _file(self, request: web.Request) -> web.StreamResponse:
        model_id, kind = _model_id(request), request.match_info["kind"]
        url = None
        if model_id is not None and kind in FILE_COLUMNS:
            url = await self.reads.file_url(model_id, kind)
        if url is None:
            return _json_error(404, "this generation has no such file")
        return web.Response(status=302, headers={"Location": url})

    async def _charts(self, request: web.Request) -> web.StreamResponse:
        try:
            hours = window_hours(request.query)
        except ValueError as exc:
            return _json_error(400, str(exc))
        return web.json_response(await self.reads.charts(hours))

    async def _replicas(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(await self.reads.replicas())

    async def _live(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(await self.reads.live())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the live state whenever it changes (and every few seconds regardless)."""
        if self._streams >= self.max_streams:
            return _json_error(503, STREAMS_FULL, **{"Retry-After": "10"})
        self._streams += 1
        try:
            return await self._stream(request)
        finally:
            self._streams -= 1

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        sent: tuple[object, ...] | None = None
        sent_at = 0.0
        with contextlib.suppress(ConnectionResetError):
            await response.write(b"retry: 2000\n\n")
            while not self._closing.is_set() and not _gone(request):
                try:
                    snapshot = await self.reads.live()
                    event, data, signature = "live", snapshot, _signature(snapshot)
                except DatabaseUnavailable:
                    event, data, signature = "unavailable", {"error": UNAVAILABLE}, ("unavailable",)
                if signature != sent or loop.time() - sent_at >= LIVE_RESEND_S:
                    await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
                    sent, sent_at = signature, loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), LIVE_TICK_S)
        return response


def _gone(request: web.Request) -> bool:
    """True once the watcher has closed the connection."""
    return request.transport is None or request.transport.is_closing()


def _model_id(request: web.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        return None


def dashboard_routes(
    token: str | None,
    pg_of: Callable[[], PgPool | None],
    *,
    owner: str,
    lease_s: float,
    allow_http: bool = False,
) -> Callable[[web.Application], None] | None:
    """What adds the dashboard to the health server's app; None without a token (the dashboard is off)."""
    if token is None:
        return None
    reads = DashboardReads(pg_of, owner=owner, lease_s=lease_s)
    return Dashboard(token, reads, allow_http=allow_http).install

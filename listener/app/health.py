"""`/healthz`, `/readyz` and `/metrics` for orchestrators and Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from listener.app.http_guard import BACKLOG, ConnectionGuard, connection_cap, descriptor_limit
from listener.metrics import Metrics

ReadinessCheck = Callable[[], Awaitable[str | None]]
READY_TIMEOUT_S = 2.0


class HealthServer:
    """A small HTTP server beside the listener; `is_ready` returns None or why it is not ready."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        not_ready_reason: ReadinessCheck,
        on_app: Callable[[web.Application], None] | None = None,
        guard: ConnectionGuard | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.not_ready_reason = not_ready_reason
        # The port is open to anyone who reaches it: the guard keeps its connections from being hoarded.
        self.guard = guard or ConnectionGuard(connection_cap(descriptor_limit()))
        app = web.Application(middlewares=[self.guard.middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # prometheus-client's own handler: content negotiation (OpenMetrics too) and gzip.
        app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
        if on_app is not None:  # more routes on the same port (the dashboard)
            on_app(app)
        self._runner = web.AppRunner(app)
        self._listening: asyncio.Server | None = None

    async def start(self) -> None:
        """Starts serving (on a free port if `port` is 0, then `port` says which)."""
        await self._runner.setup()
        assert self._runner.server is not None
        # Not a TCPSite: the guard makes each connection's handler, to see it open, wait and close.
        accept = self.guard.protocol_factory(self._runner.server, access_log=None)
        loop = asyncio.get_running_loop()
        self._listening = await loop.create_server(accept, self.host, self.port, backlog=BACKLOG)
        self.port = self._listening.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stops serving."""
        if self._listening is not None:
            self._listening.close()  # no new connections; the runner closes the open ones
        await self._runner.cleanup()
        if self._listening is not None:
            await self._listening.wait_closed()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        try:
            reason = await asyncio.wait_for(self.not_ready_reason(), timeout=READY_TIMEOUT_S)
        except TimeoutError:
            reason = "the readiness check timed out"
        if reason is None:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready", "reason": reason}, status=503)

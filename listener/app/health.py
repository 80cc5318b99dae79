"""`/healthz`, `/readyz` and `/metrics` for orchestrators and Prometheus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

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
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.not_ready_reason = not_ready_reason
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # prometheus-client's own handler: content negotiation (OpenMetrics too) and gzip.
        app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
        if on_app is not None:  # more routes on the same port (the dashboard)
            on_app(app)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        """Starts serving."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()

    async def stop(self) -> None:
        """Stops serving."""
        await self._runner.cleanup()

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

"""Postgres LISTEN on a dedicated connection that reconnects forever and checks it still hears.

A pooled connection is no place for LISTEN (asyncpg runs `UNLISTEN *` when one goes back to
its pool), so this connection is its own, named `listener-listen` in pg_stat_activity.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping

import asyncpg

from listener.adapters.postgres.pool import connect_kwargs
from listener.adapters.postgres.queries import query
from listener.core.ports import WakeUpHandler

log = logging.getLogger(__name__)

JOBS_CHANNEL = "listener_jobs"
CANCELS_CHANNEL = "listener_cancels"


class PgListener:
    """A source of wake-ups: the ids notified on the job and cancel channels, and each (re)connect."""

    def __init__(
        self,
        database_url: str,
        *,
        check_interval_s: float = 10.0,
        check_timeout_s: float = 5.0,
        max_backoff_s: float = 10.0,
        on_silent: Callable[[], object] | None = None,
    ) -> None:
        self._database_url = database_url
        # Told when the connection stops answering (a check timed out): the link to the
        # database went silent, and the pool's connections, on the same link, with it.
        self._on_silent = on_silent
        self._check_interval_s = check_interval_s
        self._check_timeout_s = check_timeout_s
        self._max_backoff_s = max_backoff_s
        self._lost = asyncio.Event()
        self.ready = False
        self.reconnects = 0

    async def run(self, handler: WakeUpHandler) -> None:
        """Listens until cancelled, telling `handler`; never gives up on the database."""
        channels: dict[str, Callable[[str], None]] = {
            JOBS_CHANNEL: handler.on_job,
            CANCELS_CHANNEL: handler.on_cancel,
        }
        failures = 0
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(**connect_kwargs(self._database_url, "listener-listen"))
                await self._register(conn, channels)
                handler.on_connect()
                if failures:
                    log.info("listen_reconnected", extra={"after_failures": failures})
                failures = 0
                await self._watch(conn, set(channels))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                # One line when the trouble starts, then one every 20 attempts: no log flood.
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "listen_connection_lost",
                        extra={"error": f"{type(exc).__name__}: {exc}", "failures": failures},
                    )
            finally:
                self.ready = False
                if conn is not None:
                    conn.terminate()
            self.reconnects += 1
            delay = min(self._max_backoff_s, 0.05 * 2 ** min(failures, 10))
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _register(
        self, conn: asyncpg.Connection, channels: Mapping[str, Callable[[str], None]]
    ) -> None:
        self._lost.clear()
        conn.add_termination_listener(lambda _: self._lost.set())
        for channel, deliver in channels.items():
            await conn.add_listener(channel, _payload_to(deliver))
        self.ready = True

    async def _watch(self, conn: asyncpg.Connection, channels: set[str]) -> None:
        """Returns when the connection is lost or no longer listens to both channels."""
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), timeout=self._check_interval_s)
                raise ConnectionError("the LISTEN connection was closed")
            except TimeoutError:
                pass
            try:
                listening = await asyncio.wait_for(
                    conn.fetch(query("listening_channels")), timeout=self._check_timeout_s
                )
            except TimeoutError:
                if self._on_silent is not None:
                    self._on_silent()
                raise
            if not channels <= {r["channel"] for r in listening}:
                raise ConnectionError("the LISTEN connection no longer listens to its channels")


def _payload_to(handler: Callable[[str], None]) -> Callable[[object, int, str, object], None]:
    def deliver(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        handler(str(payload))

    return deliver

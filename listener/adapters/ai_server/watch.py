"""The replica's AI server check: when submissions cannot reach it, claims pause until it is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from listener.core.reachability import Reachability
from listener.metrics import Metrics

log = logging.getLogger(__name__)

RECHECK_S = 2.0
CONNECT_TIMEOUT_S = 3.0


class AIServerWatch:
    """Opens claims again once the AI server accepts connections; checks every few seconds meanwhile."""

    def __init__(
        self, base_url: str, state: Reachability, metrics: Metrics, *, recheck_s: float = RECHECK_S
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.state = state
        self.metrics = metrics
        self.recheck_s = recheck_s

    async def check(self) -> None:
        """One check, at start: an AI server that refuses connections pauses claims from the outset."""
        if not await self._reachable():
            self.state.set_problem(f"the AI server at {self.host}:{self.port} refuses connections")
        self.metrics.ai_server_reachable.set(1 if self.state.usable else 0)

    async def run(self) -> None:
        """Until cancelled: each time rows find the server away, wait for it to come back."""
        while True:
            await self.state.wait_unusable()
            self.metrics.ai_server_reachable.set(0)
            log.warning("ai_server_unreachable", extra={"problem": self.state.problem})
            while not self.state.usable:
                await asyncio.sleep(self.recheck_s)
                if await self._reachable():
                    self.state.set_problem(None)
            self.metrics.ai_server_reachable.set(1)
            log.info("ai_server_back")

    async def _reachable(self) -> bool:
        """True when a TCP connection to the server opens (nothing is sent on it)."""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout=CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

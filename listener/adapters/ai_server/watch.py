"""The replica's AI server check: when submissions cannot reach it, claims pause until it is back."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from listener.core.availability import Availability
from listener.metrics import Metrics

log = logging.getLogger(__name__)

RECHECK_S = 2.0


class Probed(Protocol):
    """An AI server's own way of telling whether it can take a submission now."""

    @property
    def address(self) -> str:
        """Where it is, for the words of a problem (`host:port`)."""

    async def accepts_connections(self) -> bool:
        """True when a submission could reach it now (nothing is submitted)."""


class AIServerWatch:
    """Opens claims again once the AI server accepts connections; checks every few seconds meanwhile."""

    def __init__(
        self, server: Probed, state: Availability, metrics: Metrics, *, recheck_s: float = RECHECK_S
    ) -> None:
        self.server = server
        self.state = state
        self.metrics = metrics
        self.recheck_s = recheck_s

    async def check(self) -> None:
        """One check, at start: an AI server that refuses connections pauses claims from the outset."""
        if not await self.server.accepts_connections():
            self.state.set_problem(f"the AI server at {self.server.address} refuses connections")
        self.metrics.ai_server_reachable.set(1 if self.state.usable else 0)

    async def run(self) -> None:
        """Until cancelled: each time rows find the server away, wait for it to come back."""
        while True:
            await self.state.wait_unusable()
            self.metrics.ai_server_reachable.set(0)
            log.warning("ai_server_unreachable", extra={"problem": self.state.problem})
            while not self.state.usable:
                await asyncio.sleep(self.recheck_s)
                if await self.server.accepts_connections():
                    self.state.set_problem(None)
            self.metrics.ai_server_reachable.set(1)
            log.info("ai_server_back")

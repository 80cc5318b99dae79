"""Requests to the listener's HTTP port as a script or a browser sends them, for the dashboard's tests."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Answer:
    """What a request got back."""

    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> dict[str, Any]:
        """The body as JSON."""
        decoded = json.loads(self.body)
        assert isinstance(decoded, dict)
        return decoded


async def ask(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    *,
    source: str | None = None,
    **kwargs: object,
) -> Answer:
    """One request to the listener's HTTP port, from the loopback address `source` if given.

    Redirects are not followed. The port counts wrong tokens per address: a test that sends
    many gives each its own source (127.0.0.0/8 is all loopback).
    """
    connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.request(
            method,
            f"http://127.0.0.1:{port}{path}",
            headers=headers or {},
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=15),
            **kwargs,  # type: ignore[arg-type]
        ) as response,
    ):
        if response.content_type == "text/event-stream":
            body = (await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)).decode()
        else:
            body = await response.text()
        return Answer(response.status, dict(response.headers), body)


async def answering(port: int, *, ready: bool = True, timeout_s: float = 15) -> None:
    """Waits until the listener's HTTP port answers, and if `ready`, until the listener is ready."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if (await ask(port, "/readyz")).status == 200 or not ready:
                return
        except aiohttp.ClientConnectorError:
            pass
        assert time.monotonic() < deadline, "the listener did not start answering"
        await asyncio.sleep(0.05)

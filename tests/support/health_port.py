"""The health port in a process of its own, under a descriptor limit, and the load that tries to starve it.

`python -m tests.support.health_port PORT NOFILE [--hog]` serves the real HealthServer (the
dashboard included, over a stand-in for its reads) on 127.0.0.1:PORT with RLIMIT_NOFILE
lowered to NOFILE, logs as `listener run` does, prints `ready` and serves until its stdin
closes. `--hog` then opens descriptors until none is left, so that accepting meets EMFILE
whatever the port does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

DASHBOARD_TOKEN = "health-port-token"
HALF_A_REQUEST_LINE = b"GET /heal"


class StillReads:
    """The dashboard's reads, as a database where nothing happens would answer them."""

    async def live(self) -> dict[str, Any]:
        """One unchanging live state."""
        return {"now": time.time(), "newest_request": None, "newest_end": None, "in_flight": []}


def raise_own_descriptor_limit(wanted: int) -> int:
    """Raises this process's soft RLIMIT_NOFILE towards `wanted` (within the hard limit); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class HealthPortProcess:
    """A running health port process: its port and what it has logged so far."""

    port: int
    log_path: Path
    process: asyncio.subprocess.Process

    def log(self) -> str:
        """Everything the process has written to stderr."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.asynccontextmanager
async def health_port_process(
    port: int, nofile: int, log_path: Path, *, hog: bool = False
) -> AsyncIterator[HealthPortProcess]:
    """Starts the health port process and waits for `ready`; stops it on leaving."""
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.health_port",
            str(port),
            str(nofile),
            *(["--hog"] if hog else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        running = HealthPortProcess(port, log_path, process)
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.strip() == b"ready", running.log()
        yield running
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


@dataclass
class IdleLoad:
    """Connections that each sent half a request line and then nothing."""

    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    readers: list[asyncio.StreamReader] = field(default_factory=list)
    failed: int = 0  # connections that could not be made (refused, or timed out in a full backlog)

    def closed_by_server(self) -> int:
        """How many of them the server has closed."""
        return sum(reader.at_eof() for reader in self.readers)

    async def wait_until_all_closed(self, timeout_s: float) -> None:
        """Reads each connection until the server closes it, for at most `timeout_s` in all."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(_drain(reader) for reader in self.readers))

    async def close(self) -> None:
        """Closes every connection from this side."""
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _drain(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        await reader.read()


async def open_idle_load(port: int, count: int, *, at_once: int = 200, connect_s: float = 15.0) -> IdleLoad:
    """Opens `count` connections to 127.0.0.1:`port`, `at_once` at a time, each sending half a request."""
    load = IdleLoad()

    async def one() -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), connect_s)
        except (OSError, TimeoutError):
            load.failed += 1
            return
        load.readers.append(reader)
        load.writers.append(writer)
        with contextlib.suppress(OSError):
            writer.write(HALF_A_REQUEST_LINE)

    for start in range(0, count, at_once):
        await asyncio.gather(*(one() for _ in range(min(at_once, count - start))))
    return load


async def healthz_status(port: int, timeout_s: float = 10.0) -> int | str:
    """The status of one GET /healthz on a new connection, or what went wrong."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


def _hog_descriptors() -> list[int]:
    held = []
    with contextlib.suppress(OSError):
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    return held


async def _serve(port: int, hog: bool) -> None:
    from listener.app.dashboard.routes import Dashboard
    from listener.app.health import HealthServer
    from listener.metrics import Metrics

    async def ready() -> str | None:
        return None

    dashboard = Dashboard(DASHBOARD_TOKEN, StillReads())  # type: ignore[arg-type]
    server = HealthServer("127.0.0.1", port, Metrics(), ready, on_app=dashboard.install)
    await server.start()
    # Until the parent closes our stdin; started first, as a thread cannot start without descriptors.
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    held = _hog_descriptors() if hog else []
    print("ready", flush=True)
    await stdin_closed
    for fd in held:
        os.close(fd)
    await server.stop()


def main() -> None:
    """Serves the health port as the module docstring says."""
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("nofile", type=int)
    parser.add_argument("--hog", action="store_true")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    from listener.logs import configure_logging

    configure_logging("json")
    asyncio.run(_serve(args.port, args.hog))


if __name__ == "__main__":
    main()

"""What the benchmarks share: a `listener run` process, its settings, a simulator process, memory."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from listener.adapters.storage.config import StorageConfig
from listener.playground.embedded import free_port
from listener.playground.local_env import local_env

_SIMULATOR = (
    "import asyncio, json, sys\n"
    "from listener.playground.simulator import SimulatorConfig, serve_forever\n"
    "config = SimulatorConfig(**json.loads(sys.argv[2]))\n"
    "asyncio.run(serve_forever('127.0.0.1', int(sys.argv[1]), config))\n"
)


def listener_env(
    database_url: str, ai_url: str, spool_dir: Path, storage: StorageConfig, **settings: str
) -> dict[str, str]:
    """The environment of a `listener run` process; `settings` add or replace variables.

    `storage` must be usable (a LocalS3, say): until it is, /readyz answers 503.
    """
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return local_env(database_url, ai_url, storage, spool_dir, PATH=path, **settings)


@asynccontextmanager
async def listener_process(env: dict[str, str], log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`listener run` with `env`, logging to `log_path`; stopped with SIGTERM at the end of the block."""
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "listener", "run", env=env, stdout=log, stderr=log
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()


async def wait_until_ready(env: dict[str, str], timeout_s: float = 60.0) -> None:
    """Waits until the `listener run` started with `env` answers 200 on /readyz (it is listening)."""
    url = f"http://{env['LISTENER_HTTP_HOST']}:{env['LISTENER_HTTP_PORT']}/readyz"
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
    raise SystemExit(f"the listener was not ready within {timeout_s:g} s")


@asynccontextmanager
async def simulator_process(**config: object) -> AsyncIterator[str]:
    """The AI simulator in a process of its own (sharing no CPU with the caller); yields its URL."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SIMULATOR, str(port), json.dumps(config), stdout=asyncio.subprocess.DEVNULL
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        await process.wait()


def memory_mib(pid: int) -> dict[str, float]:
    """A process's resident memory now (VmRSS) and at its peak (VmHWM), in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def percentile(values: list[float], q: float) -> float:
    """The value at quantile `q` (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def with_spread(runs: list[dict[str, object]]) -> dict[str, object]:
    """The runs of a benchmark and, when there are several, the median, least and most of each
    numeric figure."""
    if len(runs) < 2:
        return {"runs": runs}
    spread: dict[str, dict[str, float]] = {}
    for key, first in runs[0].items():
        if isinstance(first, bool) or not isinstance(first, int | float):
            continue
        values = [float(v) for run in runs if isinstance(v := run.get(key), int | float)]
        spread[key] = {
            "median": round(statistics.median(values), 3),
            "min": round(min(values), 3),
            "max": round(max(values), 3),
        }
    return {"runs": runs, "spread": spread}

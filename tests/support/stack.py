"""The whole listener against real neighbours: PgPool, the AI simulator, a local S3."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from listener.app.service import serve
from listener.app.settings import Settings, load_settings
from listener.core.supervisor import Supervisor
from listener.playground.embedded import free_port
from listener.playground.local_env import local_env
from listener.playground.local_s3 import LocalS3
from listener.playground.simulator import AISimulator
from listener.retry import RetryPolicy
from tests.support.database import as_app_user, insert_model

TERMINAL = ("completed", "failed", "cancelled")
# The test database trusts every connection, so any password works: this one must never be logged.
DATABASE_PASSWORD = "pw-never-in-a-log"
# Secrets given the other ways a URL carries them: a libpq parameter, an AI server login.
PARAMETER_PASSWORD = "param-pw-never-in-a-log"
AI_SERVER_PASSWORD = "ai-pw-never-in-a-log"
# What opens the dashboard in the tests that turn it on.
DASHBOARD_TOKEN = "dashboard-token-never-in-a-log-4f1c9e"  # 32 characters or more, as required
SECRETS = (DATABASE_PASSWORD, "local-secret-key", PARAMETER_PASSWORD, AI_SERVER_PASSWORD, DASHBOARD_TOKEN)
# Retries in tests wait no time; a failure budget is still spent attempt by attempt.
NO_WAIT = RetryPolicy(deadline_s=30.0, max_attempts=4).scaled(0)
# What a test's listener runs with: quick polls and progress, short leases, room for many rows.
FAST_SETTINGS = {
    "LISTENER_POLL_INTERVAL": "0.05",
    "LISTENER_PROGRESS_INTERVAL": "0.3",
    "LISTENER_LEASE_SECONDS": "3",
    "LISTENER_CONCURRENCY": "20",
    "LISTENER_PER_USER_LIMIT": "20",
    "LISTENER_LOG_FORMAT": "json",
}


@dataclass
class Stack:
    """The neighbours of one test, and the settings that point a listener at them."""

    db_url: str
    simulator: AISimulator
    s3: LocalS3
    spool_dir: Path
    overrides: dict[str, str] = field(default_factory=dict)
    http_port: int = field(default_factory=free_port)

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment variables for `listener run` in this stack."""
        env = local_env(
            self.db_url.replace("postgres@", f"postgres:{DATABASE_PASSWORD}@", 1),
            self.simulator.base_url,
            self.s3.config(),
            self.spool_dir,
            **FAST_SETTINGS,
            LISTENER_HTTP_PORT=str(self.http_port),
        )
        env.update(self.overrides)
        env.update(overrides)
        return env

    def settings(self, **overrides: str) -> Settings:
        """The settings a listener in this stack reads."""
        return load_settings(self.env(**overrides))


@dataclass
class RunningListener:
    """A listener serving in this event loop."""

    stop: asyncio.Event
    task: asyncio.Task[Supervisor | None]


@asynccontextmanager
async def running_listener(
    settings: Settings, *, sweep_interval_s: float = 0.5
) -> AsyncIterator[RunningListener]:
    """Serves `settings` in-process for the block; stops it the way SIGTERM does."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(settings, stop, retry=NO_WAIT, sweep_interval_s=sweep_interval_s, storage_recheck_s=0.3)
    )
    try:
        yield RunningListener(stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def wait_for_status(
    conn: asyncpg.Connection,
    model_ids: list[uuid.UUID],
    statuses: tuple[str, ...] = TERMINAL,
    timeout_s: float = 30,
) -> dict[uuid.UUID, asyncpg.Record]:
    """Waits until every row has one of `statuses`; returns the rows. Fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await conn.fetch(
            "SELECT * FROM public.ai_generated_models WHERE id = ANY($1::uuid[])", model_ids
        )
        by_id = {r["id"]: r for r in rows}
        if len(by_id) == len(model_ids) and all(r["status"] in statuses for r in rows):
            return by_id
        if time.monotonic() > deadline:
            states = {str(k): (r["status"], r["progress"], r["error_message"]) for k, r in by_id.items()}
            raise AssertionError(f"rows did not reach {statuses} within {timeout_s} s: {states}")
        await asyncio.sleep(0.05)


async def run_rows(stack: Stack, rows: Sequence[Mapping[str, object]], **env: str) -> list[asyncpg.Record]:
    """Inserts `rows` as their owners would, serves until all are terminal; returns them in order."""
    conn = await asyncpg.connect(stack.db_url)
    try:
        ids = []
        for row in rows:
            fields = {"user_id": uuid.uuid4(), **row}
            async with as_app_user(conn, fields["user_id"]):  # type: ignore[arg-type]
                ids.append(await insert_model(conn, **fields))  # type: ignore[arg-type]
        async with running_listener(stack.settings(**env)):
            by_id = await wait_for_status(conn, ids)
        return [by_id[i] for i in ids]
    finally:
        await conn.close()


@asynccontextmanager
async def listener_process(
    stack: Stack, log_path: Path, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`listener run` as its own process, logging to `log_path`; killed if still running at the end."""
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "listener",
            "run",
            env={**stack.env(**env), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdout=log,
            stderr=log,
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
            await asyncio.wait_for(process.wait(), timeout=30)


async def wait_until(conn: asyncpg.Connection, sql: str, *args: object, timeout_s: float = 20) -> None:
    """Waits until `sql` returns true. Fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await conn.fetchval(sql, *args):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {sql}")
        await asyncio.sleep(0.05)


async def readiness(port: int) -> int:
    """The status of /readyz on `port`; 0 while nothing answers there yet."""
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return 0


async def wait_for_readiness(port: int, status: int = 200, timeout_s: float = 20) -> None:
    """Waits until /readyz answers `status` (200: started, LISTEN registered). Fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while (current := await readiness(port)) != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz stayed {current} for {timeout_s} s, expected {status}")
        await asyncio.sleep(0.05)

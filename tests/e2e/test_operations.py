"""What an operator sees: readiness that follows the LISTEN connection, and metrics that add up."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from listener.playground.embedded import free_port
from tests.support.database import as_app_user, dsn_for, insert_model
from tests.support.stack import (
    AI_SERVER_PASSWORD,
    PARAMETER_PASSWORD,
    Stack,
    listener_process,
    running_listener,
    wait_for_status,
)


async def readiness(port: int) -> int:
    """The status of /readyz; 0 while nothing listens on the port yet."""
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status
    except aiohttp.ClientConnectorError:
        return 0


async def wait_for_readiness(port: int, status: int, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while (current := await readiness(port)) != status:
        assert time.monotonic() < deadline, f"/readyz stayed {current}, expected {status}"
        await asyncio.sleep(0.05)


async def test_readyz_follows_the_listen_connection(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.db_url)
    admin = await asyncpg.connect(dsn_for(stack.db_url, "postgres"))
    database = await conn.fetchval("SELECT current_database()")
    try:
        async with running_listener(stack.settings()):
            await wait_for_readiness(stack.http_port, 200)
            # Refuse new connections, so the LISTEN connection cannot come straight back.
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            try:
                killed = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'listener-listen'"
                )
                assert killed == 1
                await wait_for_readiness(stack.http_port, 503)
            finally:
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await wait_for_readiness(stack.http_port, 200)
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{stack.http_port}/healthz") as health,
            ):
                assert health.status == 200
    finally:
        await admin.close()
        await conn.close()


async def test_health_answers_before_the_database_does(stack: Stack) -> None:
    """A replica started while Postgres is away is alive at once and says why it is not ready."""
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with running_listener(stack.settings(DATABASE_URL=unreachable)):
        deadline = time.monotonic() + 15
        while await readiness(stack.http_port) == 0:
            assert time.monotonic() < deadline, "nothing answered on the health port"
            await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{stack.http_port}/healthz") as health:
                assert health.status == 200
            async with http.get(f"http://127.0.0.1:{stack.http_port}/readyz") as ready:
                assert ready.status == 503
                assert (await ready.json())["reason"] == "starting: waiting for the database"
            async with http.get(f"http://127.0.0.1:{stack.http_port}/metrics") as metrics:
                text = await metrics.text()
    assert "listener_build_info{" in text
    assert 'listener_rows_failed_total{reason="timeout"} 0.0' in text
    assert "process_resident_memory_bytes" in text  # read from /proc: Linux, as in the image
    assert "_created" not in text


async def scrape(port: int) -> dict[str, float]:
    """The samples of /metrics by name and labels."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_metrics_count_what_happened(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings()):
            ids = []
            for prompt in ("a lamp", "a lamp [fail]", ""):
                owner = uuid.uuid4()
                async with as_app_user(conn, owner):
                    ids.append(await insert_model(conn, owner, prompt=prompt))
            rows = await wait_for_status(conn, ids)
            # A row's terminal status is written just before its coroutine ends and is counted:
            # read the metrics once every coroutine has ended (end-to-end observed for all three).
            deadline = time.monotonic() + 15
            while (samples := await scrape(stack.http_port))["listener_end_to_end_seconds_count"] < 3:
                assert time.monotonic() < deadline, samples
                await asyncio.sleep(0.05)
    finally:
        await conn.close()

    completed = rows[ids[0]]
    assert [rows[i]["status"] for i in ids] == ["completed", "failed", "failed"]
    assert samples["listener_rows_claimed_total"] == 3
    assert samples["listener_rows_completed_total"] == 1
    assert samples["listener_rows_failed_total{reason=upstream}"] == 1
    assert samples["listener_rows_failed_total{reason=validate}"] == 1
    assert samples["listener_rows_in_flight"] == 0
    assert samples["listener_claim_latency_seconds_count"] == 3
    assert samples["listener_end_to_end_seconds_count"] == 3
    assert samples["listener_ai_polls_total"] == sum(stack.simulator.polls.values())
    uploaded = [
        completed["storage_path"],
        completed["stl_storage_path"],
        f"{completed['user_id']}/thumbnails/{ids[0]}.png",
    ]
    assert samples["listener_uploaded_bytes_total"] == sum(stack.s3.object_info(key)[0] for key in uploaded)
    assert samples["listener_progress_writes_total"] >= 3


async def test_secrets_in_urls_never_reach_the_log(stack: Stack, tmp_path: Path) -> None:
    """A password as a parameter of DATABASE_URL, a login in AI_PYTHON_URL: neither is printed."""
    database_url = f"{stack.db_url}?password={PARAMETER_PASSWORD}&application_name=x"
    ai_url = stack.simulator.base_url.replace("http://", f"http://listener:{AI_SERVER_PASSWORD}@")
    conn = await asyncpg.connect(stack.db_url)
    log_path = tmp_path / "listener.log"
    try:
        async with listener_process(stack, log_path, DATABASE_URL=database_url, AI_PYTHON_URL=ai_url):
            owner = uuid.uuid4()
            async with as_app_user(conn, owner):
                model_id = await insert_model(conn, owner, prompt="a lamp [fail]")
            rows = await wait_for_status(conn, [model_id])
    finally:
        await conn.close()
    assert rows[model_id]["status"] == "failed"  # it ran: its logs say what a failure says
    log = log_path.read_text()
    assert '"event": "listener_starting"' in log and "password=***" in log and "listener:***@" in log
    assert PARAMETER_PASSWORD not in log and AI_SERVER_PASSWORD not in log

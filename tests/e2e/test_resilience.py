"""Crashes, several replicas and lost connections: every row completes, each submitted once."""

from __future__ import annotations

import asyncio
import collections
import signal
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from listener.playground.embedded import free_port
from tests.support.database import as_app_user, insert_model
from tests.support.stack import (
    Stack,
    listener_process,
    running_listener,
    wait_for_readiness,
    wait_for_status,
    wait_until,
)


async def insert_rows(conn: asyncpg.Connection, count: int, users: int = 5) -> list[uuid.UUID]:
    owners = [uuid.uuid4() for _ in range(users)]
    ids = []
    for n in range(count):
        owner = owners[n % users]
        async with as_app_user(conn, owner):
            ids.append(await insert_model(conn, owner, prompt=f"model number {n}"))
    return ids


async def test_listener_killed_mid_poll_resumes_without_submitting_again(
    stack: Stack, tmp_path: Path
) -> None:
    stack.simulator.config.duration_s = 4
    conn = await asyncpg.connect(stack.db_url)
    try:
        (model_id,) = await insert_rows(conn, 1)
        async with listener_process(stack, tmp_path / "first.log") as first:
            await wait_until(
                conn,
                "SELECT ai_task_id IS NOT NULL FROM listener.jobs j JOIN public.ai_generated_models m "
                "ON m.id = j.model_id WHERE model_id = $1 AND m.progress > 0",
                model_id,
            )
            first.send_signal(signal.SIGKILL)
            await first.wait()
        assert await conn.fetchval(
            "SELECT status FROM public.ai_generated_models WHERE id = $1", model_id
        ) == ("processing")
        async with listener_process(stack, tmp_path / "second.log"):
            rows = await wait_for_status(conn, [model_id])
        job = await conn.fetchrow("SELECT * FROM listener.jobs WHERE model_id = $1", model_id)
        assert job is not None
    finally:
        await conn.close()
    assert rows[model_id]["status"] == "completed"
    assert len(stack.simulator.submissions) == 1
    assert job["attempts"] == 2


async def test_two_replicas_share_thirty_rows_each_submitted_once(stack: Stack, tmp_path: Path) -> None:
    conn = await asyncpg.connect(stack.db_url)
    try:
        other_port = free_port()
        async with (
            listener_process(stack, tmp_path / "a.log", LISTENER_CONCURRENCY="8"),
            listener_process(
                stack, tmp_path / "b.log", LISTENER_CONCURRENCY="8", LISTENER_HTTP_PORT=str(other_port)
            ),
        ):
            await wait_for_readiness(stack.http_port)  # both are listening
            await wait_for_readiness(other_port)
            ids = await insert_rows(conn, 30)
            rows = await wait_for_status(conn, ids, timeout_s=60)
    finally:
        await conn.close()
    assert {r["status"] for r in rows.values()} == {"completed"}
    prompts = collections.Counter(s.fields["prompt"] for s in stack.simulator.submissions)
    assert prompts == collections.Counter({f"model number {n}": 1 for n in range(30)})
    # Both replicas did part of the work.
    claims = [(tmp_path / log).read_text().count('"event": "job_claimed"') for log in ("a.log", "b.log")]
    assert sum(claims) == 30 and min(claims) > 0, claims


async def test_terminated_connections_lose_no_row(stack: Stack) -> None:
    stack.simulator.config.duration_s = 2
    conn = await asyncpg.connect(stack.db_url)
    try:
        # No periodic sweep. The late row is found by its notification or by the look after the
        # reconnect (rows finishing wake the claims too); test_leases.py checks that look alone.
        async with running_listener(stack.settings(), sweep_interval_s=3600) as listener:
            ids = await insert_rows(conn, 5)
            await wait_until(conn, "SELECT count(*) = 5 FROM listener.jobs WHERE ai_task_id IS NOT NULL")
            terminated = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            late = await insert_rows(conn, 1)
            rows = await wait_for_status(conn, ids + late)
    finally:
        await conn.close()
    assert terminated >= 2  # the LISTEN connection and at least one pooled connection
    assert {r["status"] for r in rows.values()} == {"completed"}
    assert len(stack.simulator.submissions) == 6
    supervisor = listener.task.result()
    assert supervisor is not None and supervisor.wake_ups.reconnects >= 1


async def test_sigterm_hands_the_lease_back_and_another_replica_resumes(stack: Stack, tmp_path: Path) -> None:
    stack.simulator.config.duration_s = 3
    conn = await asyncpg.connect(stack.db_url)
    try:
        (model_id,) = await insert_rows(conn, 1)
        async with listener_process(stack, tmp_path / "first.log", LISTENER_LEASE_SECONDS="60") as first:
            await wait_until(
                conn, "SELECT ai_task_id IS NOT NULL FROM listener.jobs WHERE model_id = $1", model_id
            )
            first.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(first.wait(), timeout=20) == 0
        job = await conn.fetchrow(
            "SELECT lease_owner, finished_at FROM listener.jobs WHERE model_id = $1", model_id
        )
        assert job is not None
        assert (job["lease_owner"], job["finished_at"]) == (None, None)
        # A 60 s lease was handed back at once: the next replica need not wait for it to expire.
        async with listener_process(stack, tmp_path / "second.log", LISTENER_LEASE_SECONDS="60"):
            rows = await wait_for_status(conn, [model_id], timeout_s=15)
    finally:
        await conn.close()
    assert rows[model_id]["status"] == "completed"
    assert len(stack.simulator.submissions) == 1
    assert '"event": "leases_released"' in (tmp_path / "first.log").read_text()


async def test_rows_wait_unclaimed_while_the_ai_server_redeploys_and_none_fails(stack: Stack) -> None:
    """The AI server refuses connections for a while: claims pause, /readyz says why, then all complete."""
    port = urlsplit(stack.simulator.base_url).port
    assert port is not None
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings()) as listener:
            await stack.simulator.stop()  # as during its own redeploy: nothing listens on its port
            ids = await insert_rows(conn, 4)
            async with aiohttp.ClientSession() as http:
                deadline = asyncio.get_running_loop().time() + 20
                while True:
                    async with http.get(f"http://127.0.0.1:{stack.http_port}/readyz") as ready:
                        reason = (await ready.json()).get("reason", "")
                    if "refuses connections" in reason or "does not take submissions" in reason:
                        break
                    assert asyncio.get_running_loop().time() < deadline, reason
                    await asyncio.sleep(0.05)
            waiting = await conn.fetch(
                "SELECT m.status, j.ai_task_id FROM public.ai_generated_models m "
                "JOIN listener.jobs j ON j.model_id = m.id WHERE m.id = ANY($1::uuid[])",
                ids,
            )
            assert {(r["status"], r["ai_task_id"]) for r in waiting} <= {
                ("pending", None),
                ("processing", None),
            }
            await stack.simulator.start(port=port)
            rows = await wait_for_status(conn, ids, timeout_s=60)
            assert not listener.task.done()
    finally:
        await conn.close()
    assert {r["status"] for r in rows.values()} == {"completed"}
    assert len(stack.simulator.submissions) == 4  # each submitted once, after the server came back

"""Leases kept, handed back and taken over: each row claimed once and submitted once, whatever happens."""

from __future__ import annotations

import asyncio
import collections
import uuid

import asyncpg
import pytest

from listener.playground.embedded import free_port
from tests.support.database import as_app_user, dsn_for, insert_model
from tests.support.stack import (
    Stack,
    running_listener,
    wait_for_readiness,
    wait_for_status,
    wait_until,
)

# No periodic look for work: what a test checks can only come from the wake-up it is about.
NO_SWEEP_S = 3600.0


async def insert_rows(conn: asyncpg.Connection, count: int, prefix: str = "model") -> list[uuid.UUID]:
    ids = []
    for n in range(count):
        owner = uuid.uuid4()
        async with as_app_user(conn, owner):
            ids.append(await insert_model(conn, owner, prompt=f"{prefix} {n}"))
    return ids


def claimed(supervisor: object) -> float:
    """How many claims a stopped replica made (its rows_claimed counter)."""
    metrics = getattr(supervisor, "metrics", None)
    assert metrics is not None
    value = metrics.registry.get_sample_value("listener_rows_claimed_total")
    return float(value or 0)


async def test_two_replicas_renew_their_short_leases_through_long_rows(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A 1 s lease, rows that take 4 s: renewal keeps each row with the replica that claimed it."""
    stack.simulator.config.duration_s = 4
    short = {"LISTENER_LEASE_SECONDS": "1", "LISTENER_POLL_INTERVAL": "0.2"}
    other_port = free_port()
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with (
            running_listener(stack.settings(**short)) as first,
            running_listener(stack.settings(**short, LISTENER_HTTP_PORT=str(other_port))) as second,
        ):
            await wait_for_readiness(stack.http_port)
            await wait_for_readiness(other_port)
            ids = await insert_rows(conn, 6)
            rows = await wait_for_status(conn, ids, timeout_s=40)
        jobs = await conn.fetch(
            "SELECT model_id, attempts, ai_task_id FROM listener.jobs WHERE model_id = ANY($1::uuid[])", ids
        )
    finally:
        await conn.close()
    assert {r["status"] for r in rows.values()} == {"completed"}
    # One claim per row, by one replica, and one submission: a lapsed lease would show as a
    # second claim (by either replica) and a row resumed elsewhere.
    assert sorted(j["attempts"] for j in jobs) == [1] * 6
    assert claimed(first.task.result()) + claimed(second.task.result()) == 6
    prompts = collections.Counter(s.fields["prompt"] for s in stack.simulator.submissions)
    assert prompts == collections.Counter({f"model {n}": 1 for n in range(6)})
    events = [r.getMessage() for r in caplog.records]
    assert "job_reclaimed_while_running" not in events and "job_lease_lost" not in events


async def test_a_stop_during_a_slow_submission_keeps_its_task_id_and_the_next_replica_resumes(
    stack: Stack,
) -> None:
    """SIGTERM while the AI server takes its time to answer: the answer is waited for and stored."""
    stack.simulator.config.submit_delay_s = 1.5
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings(LISTENER_LEASE_SECONDS="60")):
            [model_id] = await insert_rows(conn, 1)
            await wait_until_submitted(stack)
        # Stopped (as SIGTERM stops it) while the submission was under way.
        job = await conn.fetchrow(
            "SELECT ai_task_id, lease_owner, finished_at FROM listener.jobs WHERE model_id = $1", model_id
        )
        assert job is not None
        [submission] = stack.simulator.submissions
        assert (job["ai_task_id"], job["lease_owner"], job["finished_at"]) == (submission.task_id, None, None)
        async with running_listener(stack.settings(LISTENER_LEASE_SECONDS="60")):
            rows = await wait_for_status(conn, [model_id])
    finally:
        await conn.close()
    assert rows[model_id]["status"] == "completed"
    assert [s.task_id for s in stack.simulator.submissions] == [submission.task_id]


async def test_a_lease_taken_over_during_a_slow_submission_still_keeps_its_task_id(stack: Stack) -> None:
    """The row is taken over (by a replica that dies at once) while the AI server answers slowly."""
    stack.simulator.config.submit_delay_s = 1.5
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings(LISTENER_LEASE_SECONDS="3")):
            [model_id] = await insert_rows(conn, 1)
            await wait_until_submitted(stack)
            # Another replica claims the row and dies: its lease runs out after 2 s.
            await conn.execute(
                "UPDATE listener.jobs SET lease_owner = 'replica-that-died', attempts = attempts + 1, "
                "lease_expires_at = now() + interval '2 seconds' WHERE model_id = $1",
                model_id,
            )
            rows = await wait_for_status(conn, [model_id])
    finally:
        await conn.close()
    assert rows[model_id]["status"] == "completed"
    assert len(stack.simulator.submissions) == 1


async def wait_until_submitted(stack: Stack, count: int = 1, timeout_s: float = 20) -> None:
    """Waits until the AI server has received `count` submissions (answered or not)."""
    for _ in range(int(timeout_s / 0.02)):
        if len(stack.simulator.submissions) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} submissions within {timeout_s} s")


async def test_a_row_inserted_while_the_listen_connection_was_away_is_claimed_on_reconnect(
    stack: Stack,
) -> None:
    """No row in flight and no periodic look: only the look after the reconnect can find the row."""
    conn = await asyncpg.connect(stack.db_url)
    admin = await asyncpg.connect(dsn_for(stack.db_url, "postgres"))
    database = await conn.fetchval("SELECT current_database()")
    try:
        async with running_listener(stack.settings(), sweep_interval_s=NO_SWEEP_S):
            await wait_for_readiness(stack.http_port)
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            try:
                killed = await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'listener-listen' AND datname = current_database()"
                )
                assert killed == 1
                await wait_for_readiness(stack.http_port, 503)
                # Its notification goes out while nobody listens.
                [model_id] = await insert_rows(conn, 1)
            finally:
                await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            rows = await wait_for_status(conn, [model_id], timeout_s=30)
    finally:
        await admin.close()
        await conn.close()
    assert rows[model_id]["status"] == "completed"
    assert len(stack.simulator.submissions) == 1


async def test_a_backlog_larger_than_one_claim_batch_is_claimed_at_once(stack: Stack) -> None:
    """150 rows waiting before the replica starts, room for all: the one look at start takes them all."""
    stack.simulator.config.duration_s = 60  # no row finishes, so no finished row wakes the claim loop
    conn = await asyncpg.connect(stack.db_url)
    try:
        await conn.execute(
            "INSERT INTO public.ai_generated_models "
            "(user_id, generation_type, prompt, model_name, storage_path, status) "
            "SELECT gen_random_uuid(), 'text_to_3d', 'backlog ' || n, 'Backlog', '', 'pending' "
            "FROM generate_series(1, 150) n"
        )
        settings = stack.settings(LISTENER_CONCURRENCY="200", LISTENER_POLL_INTERVAL="2")
        async with running_listener(settings, sweep_interval_s=NO_SWEEP_S):
            await wait_until(
                conn,
                "SELECT count(*) = 150 FROM listener.jobs WHERE lease_owner IS NOT NULL AND attempts = 1",
                timeout_s=30,
            )
            attempts = await conn.fetch("SELECT attempts FROM listener.jobs")
    finally:
        await conn.close()
    assert [r["attempts"] for r in attempts] == [1] * 150  # each claimed once, none claimed twice

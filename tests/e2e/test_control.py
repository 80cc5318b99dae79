"""What owners and operators steer: cancel, retry, the per-user limit and priority."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from tests.support.database import as_app_user, insert_model
from tests.support.stack import Stack, running_listener, wait_for_status, wait_until


async def test_owner_cancels_mid_poll_and_work_stops(stack: Stack) -> None:
    stack.simulator.config.durations_by_prompt = {"a slow boat": 60}  # still generating at the end
    owner = uuid.uuid4()
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings()):
            async with as_app_user(conn, owner):
                model_id = await insert_model(conn, owner, prompt="a slow boat")
            await wait_until(
                conn, "SELECT ai_task_id IS NOT NULL FROM listener.jobs WHERE model_id = $1", model_id
            )
            [cancelled_task] = [s.task_id for s in stack.simulator.submissions]
            async with as_app_user(conn, owner):
                await conn.execute(
                    "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE id = $1", model_id
                )
            # Rows asked for after the cancel, each run to its end: the cancelled task, still
            # generating, is not polled while the second one runs (no timing: only the order
            # of events counts).
            polls_seen = []
            for n in range(2):
                async with as_app_user(conn, owner):
                    later = await insert_model(conn, owner, prompt=f"a boat asked for later {n}")
                assert (await wait_for_status(conn, [later]))[later]["status"] == "completed"
                polls_seen.append(stack.simulator.polls[cancelled_task])
            row = await conn.fetchrow("SELECT * FROM public.ai_generated_models WHERE id = $1", model_id)
            assert row is not None
            told = await conn.fetchval(
                "SELECT count(*) FROM public.notifications WHERE related_id = $1", str(model_id)
            )
    finally:
        await conn.close()
    assert polls_seen[0] == polls_seen[1]
    assert (row["status"], row["download_url"], row["completed_at"], told) == ("cancelled", None, None, 0)
    # Nothing was written to Storage (the file sweep may make sure with a DELETE, which is no write).
    assert not [key for method, key in stack.s3.requests if str(model_id) in key and method != "DELETE"]


async def test_owner_retries_a_failed_row_and_it_completes(stack: Stack) -> None:
    owner = uuid.uuid4()
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings()):
            async with as_app_user(conn, owner):
                model_id = await insert_model(conn, owner, prompt="a teapot [fail]")
            failed = await wait_for_status(conn, [model_id])
            async with as_app_user(conn, owner):
                await conn.execute(
                    "UPDATE public.ai_generated_models SET status = 'pending', prompt = 'a teapot' "
                    "WHERE id = $1",
                    model_id,
                )
            completed = await wait_for_status(conn, [model_id], statuses=("completed",))
    finally:
        await conn.close()
    assert failed[model_id]["status"] == "failed"
    assert completed[model_id]["error_message"] is None
    assert [s.fields["prompt"] for s in stack.simulator.submissions] == ["a teapot [fail]", "a teapot"]


async def test_per_user_limit_holds_and_others_are_not_starved(stack: Stack) -> None:
    stack.simulator.config.duration_s = 0.6
    busy, other = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(stack.db_url)
    try:
        ids = []
        for n in range(4):
            async with as_app_user(conn, busy):
                ids.append(await insert_model(conn, busy, prompt=f"busy {n}"))
        async with as_app_user(conn, other):
            other_id = await insert_model(conn, other, prompt="other")
        most_in_flight = 0
        async with running_listener(stack.settings(LISTENER_PER_USER_LIMIT="1")):
            for _ in range(400):  # bounded: at most ~20 s
                in_flight = await conn.fetchval(
                    "SELECT count(*) FROM public.ai_generated_models "
                    "WHERE user_id = $1 AND status = 'processing'",
                    busy,
                )
                most_in_flight = max(most_in_flight, in_flight)
                done = await conn.fetchval(
                    "SELECT count(*) FROM public.ai_generated_models WHERE status = 'completed'"
                )
                if done == 5:
                    break
                await asyncio.sleep(0.05)
            rows = await wait_for_status(conn, [*ids, other_id])
        order = await conn.fetch("SELECT model_id FROM listener.jobs ORDER BY claimed_at")
    finally:
        await conn.close()
    assert {r["status"] for r in rows.values()} == {"completed"}
    assert most_in_flight == 1
    # The other user's row did not wait behind the busy user's queue.
    assert [r["model_id"] for r in order].index(other_id) <= 1


async def test_priority_orders_the_queue(stack: Stack) -> None:
    vip, regular = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(stack.db_url)
    try:
        await conn.execute(
            f"CREATE OR REPLACE FUNCTION listener.job_priority(user_id uuid) RETURNS integer "
            f"LANGUAGE sql STABLE AS $$ SELECT CASE WHEN user_id = '{vip}' THEN 10 ELSE 0 END $$"
        )
        ids = []
        for owner, name in ((regular, "regular 1"), (regular, "regular 2"), (vip, "vip 1"), (vip, "vip 2")):
            async with as_app_user(conn, owner):
                ids.append(await insert_model(conn, owner, prompt=name))
        async with running_listener(stack.settings(LISTENER_CONCURRENCY="1")):
            await wait_for_status(conn, ids)
    finally:
        await conn.close()
    assert [s.fields["prompt"] for s in stack.simulator.submissions] == [
        "vip 1",
        "vip 2",
        "regular 1",
        "regular 2",
    ]

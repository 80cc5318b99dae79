"""A row its owner cancels after its files reached Storage, but before it completed, leaves none there:
whether a replica runs it then or not."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from listener.core.data import ResultPaths
from tests.support.database import as_app_user, insert_model
from tests.support.stack import Stack, running_listener, wait_until


async def test_a_row_cancelled_between_its_uploads_and_its_completion_keeps_no_file(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.db_url)
    holder = await asyncpg.connect(stack.db_url)
    try:
        owner = uuid.uuid4()
        async with as_app_user(conn, owner):
            model_id = await insert_model(conn, owner)
        prefix = f"{owner}/"
        async with running_listener(stack.settings()):
            await wait_until(
                conn, "SELECT ai_task_id IS NOT NULL FROM listener.jobs WHERE model_id = $1", model_id
            )
            # Hold the job's row: the completion waits for it once the files are uploaded.
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT 1 FROM listener.jobs WHERE model_id = $1 FOR UPDATE", model_id)
            # The files reach Storage; the completion then waits for the row (so does the renewal).
            await wait_until(
                conn,
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%status = ''completed''%'",
            )
            uploaded = stack.s3.keys(prefix)
            # The owner cancels while the completion waits: it commits first, and wins.
            await holder.execute(
                "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE id = $1", model_id
            )
            await transaction.commit()
            for _ in range(400):
                if not stack.s3.keys(prefix):
                    break
                await asyncio.sleep(0.05)
        status = await conn.fetchval("SELECT status FROM public.ai_generated_models WHERE id = $1", model_id)
    finally:
        await holder.close()
        await conn.close()
    assert len(uploaded) == 3  # the GLB, the STL and the thumbnail were in Storage
    assert status == "cancelled"
    assert stack.s3.keys(prefix) == []


async def test_a_row_cancelled_while_no_replica_runs_it_keeps_no_file_its_uploader_left(stack: Stack) -> None:
    """Its uploader died before completing it, and the owner cancels before another takes it over."""
    conn = await asyncpg.connect(stack.db_url)
    try:
        owner, other = uuid.uuid4(), uuid.uuid4()
        async with as_app_user(conn, owner):
            model_id = await insert_model(conn, owner)
        async with as_app_user(conn, other):
            untouched = await insert_model(conn, other)
        # What a killed replica leaves: the task asked for, the files in Storage, no completion.
        await conn.execute(
            "UPDATE listener.jobs SET ai_task_id = 'task-of-a-dead-replica', submitted_at = now() "
            "WHERE model_id = $1",
            model_id,
        )
        for row, user in ((model_id, owner), (untouched, other)):
            paths = ResultPaths.of(user, row)
            for path in (paths.glb, paths.stl, paths.thumbnail):
                stack.s3.put_object(path, b"left behind", "application/octet-stream")
        await conn.execute(
            "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE id = $1", model_id
        )
        # The other row is generated and completed as usual: its files are replaced, not removed.
        async with running_listener(stack.settings()):
            for _ in range(400):
                if not stack.s3.keys(f"{owner}/"):
                    break
                await asyncio.sleep(0.05)
            await wait_until(
                conn, "SELECT status = 'completed' FROM public.ai_generated_models WHERE id = $1", untouched
            )
        marked = await conn.fetchval(
            "SELECT files_to_remove FROM listener.jobs WHERE model_id = $1", model_id
        )
    finally:
        await conn.close()
    assert stack.s3.keys(f"{owner}/") == []
    assert len(stack.s3.keys(f"{other}/")) == 3
    assert marked is False

"""A row taken over from a replica that died keeps what it had spent: its deadline, its failed polls.

The dead replica's work is laid in the database as it would have left it: the row
`processing`, its job with the AI task id, when it was submitted, its failed polls and an
expired lease. The task itself is real: submitted to the AI simulator by the real client.
"""

from __future__ import annotations

import json
import uuid

import aiohttp
import asyncpg

from listener.adapters.ai_server.client import AIClient
from listener.core.data import ModelRequest
from tests.support.database import as_app_user, insert_model
from tests.support.stack import Stack, running_listener, wait_for_status, wait_until

DEAD_REPLICA = "replica-that-died:1:dead00"


async def submit_task(stack: Stack, prompt: str = "a small wooden boat") -> str:
    """Starts a generation on the AI simulator, as the dead replica did; returns its task id."""
    async with aiohttp.ClientSession() as http:
        return await AIClient(stack.simulator.base_url, http).submit(ModelRequest("text_to_3d", prompt))


async def left_by_a_dead_replica(
    conn: asyncpg.Connection,
    task_id: str | None,
    *,
    submitted_ago_s: float = 1.0,
    poll_failures: int = 0,
    attempts: int = 1,
    owner: uuid.UUID | None = None,
) -> uuid.UUID:
    """A row whose replica died mid-generation: processing, its lease run out."""
    owner = owner or uuid.uuid4()
    async with as_app_user(conn, owner):
        model_id = await insert_model(conn, owner)
    await conn.execute("UPDATE public.ai_generated_models SET status = 'processing' WHERE id = $1", model_id)
    await conn.execute(
        """
        UPDATE listener.jobs SET
            ai_task_id = $2,
            submitted_at = CASE WHEN $2::text IS NULL THEN NULL
                                ELSE now() - make_interval(secs => $3) END,
            poll_failures = $4,
            attempts = $5,
            claimed_at = now() - make_interval(secs => $3),
            lease_owner = $6,
            lease_expires_at = now() - interval '1 second'
        WHERE model_id = $1
        """,
        model_id,
        task_id,
        submitted_ago_s,
        poll_failures,
        attempts,
        DEAD_REPLICA,
    )
    return model_id


async def test_the_deadline_of_a_resumed_row_counts_from_its_first_submission(stack: Stack) -> None:
    """Submitted 31 minutes ago with a 30-minute budget: it fails as timed out, though the task is done."""
    task_id = await submit_task(stack)
    conn = await asyncpg.connect(stack.db_url)
    try:
        model_id = await left_by_a_dead_replica(conn, task_id, submitted_ago_s=31 * 60)
        async with running_listener(stack.settings(LISTENER_GENERATION_TIMEOUT="1800")):
            rows = await wait_for_status(conn, [model_id])
        attempts = await conn.fetchval("SELECT attempts FROM listener.jobs WHERE model_id = $1", model_id)
    finally:
        await conn.close()
    row = rows[model_id]
    assert (row["status"], row["error_message"]) == ("failed", "Generation timed out after 30 minutes.")
    assert json.loads(row["generation_metadata"]) == {"ai_task_id": task_id}
    assert len(stack.simulator.submissions) == 1  # resumed, never submitted again
    assert attempts == 2


async def test_nine_failed_polls_before_the_takeover_and_one_after_fail_the_row(stack: Stack) -> None:
    task_id = await submit_task(stack)
    stack.simulator.config.fail_polls_next_n = 1
    conn = await asyncpg.connect(stack.db_url)
    try:
        model_id = await left_by_a_dead_replica(conn, task_id, poll_failures=9)
        async with running_listener(stack.settings()):
            rows = await wait_for_status(conn, [model_id])
    finally:
        await conn.close()
    row = rows[model_id]
    assert (row["status"], row["error_message"]) == (
        "failed",
        "The AI server was unreachable for 10 polls in a row.",
    )
    assert stack.simulator.polls[task_id] == 1
    assert len(stack.simulator.submissions) == 1


async def test_a_task_the_ai_server_no_longer_knows_ends_the_row_with_a_plain_reason(stack: Stack) -> None:
    """The AI server answers 500 for a task it lost (it restarted): the owner reads what happened."""
    conn = await asyncpg.connect(stack.db_url)
    try:
        model_id = await left_by_a_dead_replica(conn, "task-the-server-forgot")
        async with running_listener(stack.settings(LISTENER_MAX_POLL_FAILURES="3")):
            rows = await wait_for_status(conn, [model_id])
    finally:
        await conn.close()
    row = rows[model_id]
    assert (row["status"], row["error_message"]) == (
        "failed",
        "The AI server no longer knows this generation: 3 polls in a row failed.",
    )
    assert stack.simulator.polls["task-the-server-forgot"] == 3
    assert stack.simulator.submissions == []


async def test_a_job_the_sweep_gives_up_is_told_to_its_owner(stack: Stack) -> None:
    """Claimed eight times by replicas that died: failed with a reason, and its owner is told."""
    owner = uuid.uuid4()
    conn = await asyncpg.connect(stack.db_url)
    try:
        # The owner's other row is in flight elsewhere: with one row per user, the stuck one
        # cannot be claimed again, so the sweep alone decides its fate.
        busy = await left_by_a_dead_replica(conn, None, owner=owner)
        await conn.execute(
            "UPDATE listener.jobs SET lease_expires_at = now() + interval '1 hour' WHERE model_id = $1", busy
        )
        stuck = await left_by_a_dead_replica(conn, None, attempts=8, owner=owner)
        async with running_listener(stack.settings(LISTENER_PER_USER_LIMIT="1")):
            rows = await wait_for_status(conn, [stuck])
            # The owner is told just after the row ends (the first time, once the app's
            # tables are known), so the test waits for the notification as a user would.
            await wait_until(
                conn, "SELECT count(*) > 0 FROM public.notifications WHERE related_id = $1", str(stuck)
            )
            notes = await conn.fetch(
                "SELECT * FROM public.notifications WHERE related_id = $1 AND user_id = $2", str(stuck), owner
            )
    finally:
        await conn.close()
    reason = "The listener could not finish this generation after 8 attempts."
    assert (rows[stuck]["status"], rows[stuck]["error_message"]) == ("failed", reason)
    [note] = notes
    assert (note["type"], note["message_en"]) == (
        "ai_model_failed",
        f"'Boat' model could not be created: {reason}",
    )
    assert stack.simulator.submissions == []


async def test_a_job_claimed_eight_times_is_given_up_rather_than_claimed_a_ninth_time(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.db_url)
    try:
        stuck = await left_by_a_dead_replica(conn, None, attempts=8)
        async with running_listener(stack.settings()):
            rows = await wait_for_status(conn, [stuck])
    finally:
        await conn.close()
    assert rows[stuck]["error_message"] == "The listener could not finish this generation after 8 attempts."
    assert stack.simulator.submissions == []

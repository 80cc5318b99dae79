"""Claims against a real Postgres: races with cancels, fairness inputs, jobs given up."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from listener.adapters.postgres.jobs import PgJobStore
from tests.support.database import insert_model, wait_for_lock_wait

OWNER = "replica-a:1:abc"


async def test_a_cancel_committed_while_a_claim_waits_is_not_claimed(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        model_id = await insert_model(conn, uuid.uuid4())
        async with PgJobStore.connect(db_url) as db:
            cancelling = conn.transaction()
            await cancelling.start()
            # The cancel's trigger now holds the job row's lock until it commits.
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE id = $1", model_id
            )
            claim = asyncio.create_task(db.claim(OWNER, 5, 5, 30, 8))
            # The race is on: the claim's statement waits for the job row the cancel holds.
            await wait_for_lock_wait(conn, "listener")
            assert not claim.done()
            await cancelling.commit()
            claimed = await asyncio.wait_for(claim, timeout=10)
        job = await conn.fetchrow(
            "SELECT lease_owner, outcome FROM listener.jobs WHERE model_id = $1", model_id
        )
        assert job is not None
    finally:
        await conn.close()
    assert claimed == []
    assert (job["lease_owner"], job["outcome"]) == (None, "cancelled")


async def test_a_job_claimed_too_often_is_given_up_with_a_reason(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        stuck, fresh = await insert_model(conn, uuid.uuid4()), await insert_model(conn, uuid.uuid4())
        await conn.execute("UPDATE listener.jobs SET attempts = 8 WHERE model_id = $1", stuck)
        async with PgJobStore.connect(db_url) as db:
            given_up = await db.give_up_jobs(8)
            claimed = await db.claim(OWNER, 5, 5, 30, 8)
        row = await conn.fetchrow(
            "SELECT status, error_message FROM public.ai_generated_models WHERE id = $1", stuck
        )
        assert row is not None
    finally:
        await conn.close()
    assert [g.model_id for g in given_up] == [stuck]
    assert (row["status"], row["error_message"]) == (
        "failed",
        "The listener could not finish this generation after 8 attempts.",
    )
    assert [c.model_id for c in claimed] == [fresh]


async def test_handing_leases_back_does_not_count_as_an_attempt(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        model_id = await insert_model(conn, uuid.uuid4())
        async with PgJobStore.connect(db_url) as db:
            for _ in range(3):
                (job,) = await db.claim(OWNER, 1, 1, 30, 8)
                assert job.attempts == 1
                assert await db.release_leases(OWNER) == 1
    finally:
        await conn.close()
    assert job.model_id == model_id

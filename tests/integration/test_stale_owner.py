"""A replica whose lease is gone writes nothing: not another owner's, not after a re-claim.

Each write of a row's life goes through PgJobStore (listener/adapters/postgres/jobs.py) against a
real Postgres; the row and its job are read back whole, so a write that slipped through shows in
any column.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from listener.adapters.postgres.jobs import PgJobStore
from listener.core.data import CompletedColumns
from tests.support.database import insert_model

FIRST = "replica-a:1:aaaaaa"
SECOND = "replica-b:2:bbbbbb"
RESULTS = CompletedColumns(
    "u/generated-models/m.glb",
    "https://cdn.example/m.glb",
    2048,
    "u/generated-models/m.stl",
    "https://cdn.example/m.stl",
    "https://cdn.example/t.png",
    {"x": 1.0, "y": 2.0, "z": 3.0},
    {"ai_task_id": "stale-task"},
)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[PgJobStore]:
    async with PgJobStore.connect(db_url) as database:
        yield database


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    try:
        yield connection
    finally:
        await connection.close()


async def snapshot(conn: asyncpg.Connection, model_id: uuid.UUID) -> dict[str, Any]:
    """The row and its job, every column (the row's `updated_at` aside, which any write touches)."""
    row = await conn.fetchrow(
        "SELECT to_jsonb(m) - 'updated_at' AS model, to_jsonb(j) AS job "
        "FROM public.ai_generated_models m JOIN listener.jobs j ON j.model_id = m.id WHERE m.id = $1",
        model_id,
    )
    assert row is not None
    return {"model": json.loads(row["model"]), "job": json.loads(row["job"])}


async def stale_writes(db: PgJobStore, model_id: uuid.UUID, owner: str) -> list[object]:
    """Every write of a row's life, as `owner`; what each returned."""
    return [
        await db.record_task_id(model_id, owner, "stale-task"),
        await db.record_poll_failures(model_id, owner, 7),
        await db.write_progress(model_id, owner, 55),
        await db.complete(model_id, owner, RESULTS),
        await db.fail(model_id, owner, "a stale replica's reason", {"ai_task_id": "stale-task"}),
    ]


async def test_another_owner_changes_nothing(db: PgJobStore, conn: asyncpg.Connection) -> None:
    model_id = await insert_model(conn, uuid.uuid4())
    [job] = await db.claim(FIRST, 1, 1, 60, 8)
    assert await db.record_task_id(model_id, FIRST, "task-of-the-owner")
    before = await snapshot(conn, model_id)

    assert await stale_writes(db, model_id, SECOND) == [False, False, False, None, None]

    assert await snapshot(conn, model_id) == before
    assert job.model_id == model_id
    # The owner itself still writes: the refusals above were about the owner, not the row.
    assert await db.write_progress(model_id, FIRST, 30)


async def test_a_replica_whose_row_was_claimed_again_changes_nothing(
    db: PgJobStore, conn: asyncpg.Connection
) -> None:
    model_id = await insert_model(conn, uuid.uuid4())
    await db.claim(FIRST, 1, 1, 60, 8)
    # The first replica stopped renewing (its database was away): its lease runs out...
    await conn.execute(
        "UPDATE listener.jobs SET lease_expires_at = now() - interval '1 second' WHERE model_id = $1",
        model_id,
    )
    # ...a sweep hands it back, and another replica takes the row over.
    assert await db.claim(SECOND, 1, 1, 60, 8) == []  # not while it is still leased
    assert (await db.release_expired_leases()).released == 1
    [again] = await db.claim(SECOND, 1, 1, 60, 8)
    assert (again.model_id, again.attempts, again.ai_task_id) == (model_id, 2, None)
    # The first replica's generation was under way: its id is kept for the new owner, who
    # polls that generation instead of starting a second one. The first replica is told
    # the row is no longer its own.
    assert await db.record_task_id(model_id, FIRST, "task-of-the-first-owner") is False
    before = await snapshot(conn, model_id)
    assert before["job"]["ai_task_id"] == "task-of-the-first-owner"

    assert await stale_writes(db, model_id, FIRST) == [False, False, False, None, None]
    assert await db.renew_leases(FIRST, [model_id], 60) == set()
    await db.release_lease(model_id, FIRST)

    assert await snapshot(conn, model_id) == before
    # The new owner's writes go through.
    assert await db.record_task_id(model_id, SECOND, "task-of-the-new-owner")
    assert await conn.fetchval("SELECT ai_task_id FROM listener.jobs WHERE model_id = $1", model_id) == (
        "task-of-the-new-owner"
    )
    assert await db.renew_leases(SECOND, [model_id], 60) == {model_id}
    finished = await db.fail(model_id, SECOND, "The prompt is empty.", {})
    assert finished is not None and finished.status == "failed"


async def test_a_finished_row_takes_no_late_write_even_from_its_last_owner(
    db: PgJobStore, conn: asyncpg.Connection
) -> None:
    model_id = await insert_model(conn, uuid.uuid4())
    await db.claim(FIRST, 1, 1, 60, 8)
    assert await db.complete(model_id, FIRST, RESULTS) is not None
    before = await snapshot(conn, model_id)

    assert await stale_writes(db, model_id, FIRST) == [False, False, False, None, None]

    assert await snapshot(conn, model_id) == before
    assert before["model"]["status"] == "completed" and before["model"]["progress"] == 100


async def test_a_lease_renewed_in_time_outlives_its_first_term(
    db: PgJobStore, conn: asyncpg.Connection
) -> None:
    """Renewal moves the expiry forward by the lease, from now: a renewed row cannot be claimed."""
    model_id = await insert_model(conn, uuid.uuid4())
    await db.claim(FIRST, 1, 1, 1, 8)
    first_term = await conn.fetchval(
        "SELECT lease_expires_at - now() FROM listener.jobs WHERE model_id = $1", model_id
    )
    assert await db.renew_leases(FIRST, [model_id], 600) == {model_id}
    term = await conn.fetchval(
        "SELECT lease_expires_at - now() FROM listener.jobs WHERE model_id = $1", model_id
    )
    assert first_term.total_seconds() <= 1 and term.total_seconds() > 590
    expired = await db.release_expired_leases()
    assert expired.released == 0
    assert expired.next_expiry_s is not None and 590 < expired.next_expiry_s <= 600
    assert await db.claim(SECOND, 1, 1, 60, 8) == []

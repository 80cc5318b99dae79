"""The claim's promises, held by the SQL claim and by the in-memory fake the unit tier runs on.

The unit tier trusts tests/unit/fakes.py's FakeJobStore to claim as Postgres does; the same
scenarios run here against both, so the fake cannot drift from what it stands in for.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Protocol

import asyncpg
import pytest

from listener.adapters.postgres.jobs import PgJobStore
from listener.core.ports import LeaseStore
from tests.support.database import insert_model
from tests.unit.fakes import FakeJobStore, claimed_job

ME, OTHER = "replica-a:1:me", "replica-b:2:other"
LEASE_S, MAX_CLAIMS = 30.0, 8


class ClaimWorld(Protocol):
    """Rows waiting to be claimed, in one store or the other."""

    @property
    def store(self) -> LeaseStore:
        """The store whose claim is tried."""

    async def waiting(self, user: uuid.UUID) -> uuid.UUID:
        """A new pending row of `user`, after every row made before it."""

    async def claimed_too_often(self, model_id: uuid.UUID) -> None:
        """The row's job was claimed the most times already (its replicas died each time)."""

    async def cancelled(self, model_id: uuid.UUID) -> None:
        """The row's owner cancelled it."""


class FakeWorld:
    def __init__(self) -> None:
        self.fake = FakeJobStore()

    @property
    def store(self) -> LeaseStore:
        return self.fake

    async def waiting(self, user: uuid.UUID) -> uuid.UUID:
        return self.fake.add(claimed_job(user_id=user)).model_id

    async def claimed_too_often(self, model_id: uuid.UUID) -> None:
        self.fake.row(model_id).attempts = MAX_CLAIMS

    async def cancelled(self, model_id: uuid.UUID) -> None:
        self.fake.cancel(model_id)


class PostgresWorld:
    def __init__(self, conn: asyncpg.Connection, store: PgJobStore) -> None:
        self.conn, self.pg_store = conn, store

    @property
    def store(self) -> LeaseStore:
        return self.pg_store

    async def waiting(self, user: uuid.UUID) -> uuid.UUID:
        return await insert_model(self.conn, user)

    async def claimed_too_often(self, model_id: uuid.UUID) -> None:
        await self.conn.execute(
            "UPDATE listener.jobs SET attempts = $2 WHERE model_id = $1", model_id, MAX_CLAIMS
        )

    async def cancelled(self, model_id: uuid.UUID) -> None:
        await self.conn.execute(
            "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE id = $1", model_id
        )


@pytest.fixture(params=["fake", "postgres"])
async def world(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[ClaimWorld]:
    if request.param == "fake":
        yield FakeWorld()
        return
    conn = await asyncpg.connect(db_url)
    try:
        async with PgJobStore.connect(db_url, max_size=2) as store:
            yield PostgresWorld(conn, store)
    finally:
        await conn.close()


async def claim(world: ClaimWorld, owner: str, slots: int, per_user: int = 10) -> list[uuid.UUID]:
    jobs = await world.store.claim(owner, slots, per_user, LEASE_S, MAX_CLAIMS)
    return [job.model_id for job in jobs]


async def test_a_claim_takes_the_oldest_rows_up_to_its_free_slots(world: ClaimWorld) -> None:
    rows = [await world.waiting(uuid.uuid4()) for _ in range(5)]
    assert await claim(world, ME, 2) == rows[:2]
    assert await claim(world, ME, 10) == rows[2:]
    assert await claim(world, ME, 10) == []


async def test_a_row_is_claimed_once_whichever_replica_asks(world: ClaimWorld) -> None:
    rows = [await world.waiting(uuid.uuid4()) for _ in range(3)]
    mine = await claim(world, ME, 2)
    theirs = await claim(world, OTHER, 5)
    assert sorted(mine + theirs) == sorted(rows) and not set(mine) & set(theirs)


async def test_a_user_holds_no_more_rows_than_the_per_user_limit_across_replicas(world: ClaimWorld) -> None:
    busy, quiet = uuid.uuid4(), uuid.uuid4()
    busy_rows = [await world.waiting(busy) for _ in range(4)]
    quiet_row = await world.waiting(quiet)
    assert await claim(world, ME, 10, per_user=2) == [*busy_rows[:2], quiet_row]
    assert await claim(world, OTHER, 10, per_user=2) == []  # busy holds two already, wherever they run


async def test_cancelled_rows_and_rows_claimed_too_often_are_not_claimed(world: ClaimWorld) -> None:
    cancelled, worn_out, fine = [await world.waiting(uuid.uuid4()) for _ in range(3)]
    await world.cancelled(cancelled)
    await world.claimed_too_often(worn_out)
    assert await claim(world, ME, 10) == [fine]


async def test_each_claim_counts_as_an_attempt(world: ClaimWorld) -> None:
    await world.waiting(uuid.uuid4())
    (job,) = await world.store.claim(ME, 1, 10, LEASE_S, MAX_CLAIMS)
    assert job.attempts == 1

"""A double tap makes one paid row: the second insert with the same request key finds the first."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support.database import as_app_user

ADA, BO = uuid.uuid4(), uuid.uuid4()
INSERT = """
    INSERT INTO public.ai_generated_models
        (user_id, generation_type, prompt, model_name, storage_path, status, request_key)
    VALUES ($1, 'text_to_3d', 'a lamp', 'Lamp', '', 'pending', $2)
"""
# What supabase-js sends for `.upsert(row, { onConflict: 'user_id,request_key', ignoreDuplicates: true })`.
UPSERT = INSERT + " ON CONFLICT (user_id, request_key) DO NOTHING RETURNING id"


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    yield connection
    await connection.close()


async def counts(conn: asyncpg.Connection, user: uuid.UUID) -> tuple[int, int, int]:
    """The user's rows, jobs and requests counted against their limits."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM public.ai_generated_models WHERE user_id = $1) AS models, "
        "(SELECT count(*) FROM listener.jobs WHERE user_id = $1) AS jobs, "
        "(SELECT count(*) FROM listener.requests WHERE user_id = $1) AS requests",
        user,
    )
    assert row is not None
    return row["models"], row["jobs"], row["requests"]


async def test_a_second_insert_with_the_same_key_is_refused_and_costs_nothing(
    conn: asyncpg.Connection,
) -> None:
    async with as_app_user(conn, ADA):
        await conn.execute(INSERT, ADA, "tap-1")
    with pytest.raises(asyncpg.UniqueViolationError, match="ai_generated_models_request_key_unique"):
        async with as_app_user(conn, ADA):
            await conn.execute(INSERT, ADA, "tap-1")
    assert await counts(conn, ADA) == (1, 1, 1)


async def test_the_upsert_of_supabase_js_answers_nothing_the_second_time_and_the_row_is_found_by_key(
    conn: asyncpg.Connection,
) -> None:
    async with as_app_user(conn, ADA):
        first = await conn.fetchval(UPSERT, ADA, "tap-2")
        again = await conn.fetchval(UPSERT, ADA, "tap-2")
        found = await conn.fetchval(
            "SELECT id FROM public.ai_generated_models WHERE request_key = $1", "tap-2"
        )
    assert first is not None and again is None and found == first
    assert await counts(conn, ADA) == (1, 1, 1)


async def test_keys_are_each_users_own_and_rows_without_a_key_never_collide(conn: asyncpg.Connection) -> None:
    for user in (ADA, BO):
        async with as_app_user(conn, user):
            await conn.execute(INSERT, user, "same-key")
            await conn.execute(INSERT, user, None)
            await conn.execute(INSERT, user, None)
    assert await counts(conn, ADA) == (3, 3, 3)
    assert await counts(conn, BO) == (3, 3, 3)


async def test_two_taps_at_once_make_one_row(db_url: str, conn: asyncpg.Connection) -> None:
    async def tap() -> object:
        other = await asyncpg.connect(db_url)
        try:
            async with as_app_user(other, ADA):
                return await other.fetchval(UPSERT, ADA, "double-tap")
        finally:
            await other.close()

    answers = await asyncio.gather(tap(), tap())
    assert sorted(answer is None for answer in answers) == [False, True]
    assert await counts(conn, ADA) == (1, 1, 1)


@pytest.mark.parametrize("key", ["", "k" * 101])
async def test_a_key_that_is_empty_or_long_is_refused(conn: asyncpg.Connection, key: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="request_key_length"):
        async with as_app_user(conn, ADA):
            await conn.execute(INSERT, ADA, key)

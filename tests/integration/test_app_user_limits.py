"""What the database refuses a hostile app user: floods, oversized texts, forged results."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from listener.adapters.postgres.jobs import PgJobStore
from tests.support.database import as_app_user, insert_model, wait_for_lock_wait

ADA = uuid.UUID("11111111-1111-1111-1111-111111111111")
BO = uuid.UUID("22222222-2222-2222-2222-222222222222")
OWNER = "replica-a:1:abc"


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    yield connection
    await connection.close()


async def insert_as(conn: asyncpg.Connection, user: uuid.UUID, **fields: object) -> uuid.UUID:
    async with as_app_user(conn, user):
        return await insert_model(conn, user, **fields)  # type: ignore[arg-type]


async def fail_as_listener(conn: asyncpg.Connection, model_id: uuid.UUID) -> None:
    """What the listener does to a row that failed: the job ends, the row says why."""
    await conn.execute(
        "UPDATE listener.jobs SET finished_at = now(), outcome = 'failed' WHERE model_id = $1", model_id
    )
    await conn.execute(
        "UPDATE public.ai_generated_models SET status = 'failed', error_message = 'no' WHERE id = $1",
        model_id,
    )


async def set_limit(conn: asyncpg.Connection, function: str, value: str) -> None:
    """Replaces a limit as an operator would."""
    await conn.execute(
        f"CREATE OR REPLACE FUNCTION listener.{function}(user_id uuid) RETURNS integer "
        f"LANGUAGE sql STABLE AS $$ SELECT {value} $$"
    )


# -- how much one user may ask ------------------------------------------------------------


async def test_a_user_may_have_ten_unfinished_rows_and_the_eleventh_is_refused_by_name(
    conn: asyncpg.Connection,
) -> None:
    ids = [await insert_as(conn, ADA) for _ in range(10)]
    with pytest.raises(asyncpg.CheckViolationError, match="you already have 10 models waiting"):
        await insert_as(conn, ADA)
    await insert_as(conn, BO)  # another user is not held back
    await fail_as_listener(conn, ids[0])
    await insert_as(conn, ADA)  # a place came free
    assert await conn.fetchval("SELECT count(*) FROM listener.jobs WHERE user_id = $1", ADA) == 11


async def test_a_retry_counts_towards_the_unfinished_rows(conn: asyncpg.Connection) -> None:
    await set_limit(conn, "max_unfinished_per_user", "2")
    first = await insert_as(conn, ADA)
    await fail_as_listener(conn, first)
    await insert_as(conn, ADA)
    await insert_as(conn, ADA)
    with pytest.raises(asyncpg.CheckViolationError, match="you already have 2 models"):
        async with as_app_user(conn, ADA):
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'pending' WHERE id = $1", first
            )


async def test_two_requests_at_once_cannot_both_take_the_last_place(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await set_limit(conn, "max_unfinished_per_user", "1")
    other = await asyncpg.connect(db_url)
    try:
        first = conn.transaction()
        await first.start()
        await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", json.dumps({"sub": str(ADA)}))
        await conn.execute("SET LOCAL ROLE authenticated")
        await insert_model(conn, ADA)
        second = asyncio.create_task(insert_as(other, ADA))
        watcher = await asyncpg.connect(db_url)  # `conn` acts as the app user: it cannot see others wait
        try:
            await wait_for_lock_wait(watcher)  # the second request waits for the first of the same user
        finally:
            await watcher.close()
        assert not second.done()
        await first.commit()
        with pytest.raises(asyncpg.CheckViolationError, match="you already have 1 models"):
            await asyncio.wait_for(second, timeout=10)
    finally:
        await other.close()


async def test_the_daily_limit_counts_deleted_rows_too(conn: asyncpg.Connection) -> None:
    await set_limit(conn, "max_requests_per_day", "3")
    for _ in range(3):
        model_id = await insert_as(conn, ADA)
        async with as_app_user(conn, ADA):
            await conn.execute("DELETE FROM public.ai_generated_models WHERE id = $1", model_id)
    with pytest.raises(asyncpg.CheckViolationError, match="asked for 3 models in the last 24 hours"):
        await insert_as(conn, ADA)
    await insert_as(conn, BO)


async def test_a_deleted_row_inserted_again_keeps_spending_its_retries(conn: asyncpg.Connection) -> None:
    model_id = uuid.uuid4()
    insert = (
        "INSERT INTO public.ai_generated_models (id, user_id, generation_type, prompt, model_name, "
        "storage_path, status) VALUES ($1, $2, 'text_to_3d', 'a lamp', 'Lamp', '', 'pending')"
    )
    limit = await conn.fetchval("SELECT listener.max_owner_retries()")
    for _ in range(limit + 1):
        async with as_app_user(conn, ADA):
            await conn.execute(insert, model_id, ADA)
        await fail_as_listener(conn, model_id)
        async with as_app_user(conn, ADA):
            await conn.execute("DELETE FROM public.ai_generated_models WHERE id = $1", model_id)
    with pytest.raises(asyncpg.CheckViolationError, match="already retried 3 times"):
        async with as_app_user(conn, ADA):
            await conn.execute(insert, model_id, ADA)


async def test_limits_hold_for_any_api_role_but_not_for_the_service_role(conn: asyncpg.Connection) -> None:
    await set_limit(conn, "max_unfinished_per_user", "1")
    await conn.execute("CREATE ROLE premium NOLOGIN IN ROLE authenticated")
    await conn.execute("GRANT premium TO current_user")
    await insert_as(conn, ADA)
    with pytest.raises(asyncpg.CheckViolationError, match="you already have 1 models"):
        async with conn.transaction():
            claims = json.dumps({"sub": str(ADA), "role": "premium"})
            await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", claims)
            await conn.execute("SET LOCAL ROLE premium")
            await insert_model(conn, ADA)
    async with conn.transaction():
        claims = json.dumps({"sub": str(ADA), "role": "service_role"})
        await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", claims)
        await conn.execute("SET LOCAL ROLE service_role")
        await insert_model(conn, ADA)  # the server side is trusted


# -- many rows in one statement --------------------------------------------------------------

BULK_INSERT = """
    INSERT INTO public.ai_generated_models
        (user_id, generation_type, prompt, model_name, storage_path, status)
    SELECT $1, 'text_to_3d', 'a lamp ' || n, 'Lamp', '', 'pending' FROM generate_series(1, $2) n
"""


async def bulk_insert_as(conn: asyncpg.Connection, user: uuid.UUID, rows: int) -> None:
    """One INSERT of many rows, as supabase-js sends `.insert([...])`."""
    async with as_app_user(conn, user):
        await conn.execute(BULK_INSERT, user, rows)


async def count_jobs(conn: asyncpg.Connection, user: uuid.UUID) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM listener.jobs WHERE user_id = $1", user)
    return count


async def test_one_insert_of_200_rows_is_refused_whole_by_the_daily_limit(conn: asyncpg.Connection) -> None:
    await set_limit(conn, "max_requests_per_day", "5")
    with pytest.raises(asyncpg.CheckViolationError, match="asked for 5 models in the last 24 hours"):
        await bulk_insert_as(conn, ADA, 200)
    assert await count_jobs(conn, ADA) == 0
    assert await conn.fetchval("SELECT count(*) FROM public.ai_generated_models") == 0
    await bulk_insert_as(conn, ADA, 5)  # what the limit allows still goes through in one statement
    with pytest.raises(asyncpg.CheckViolationError, match="asked for 5 models"):
        await insert_as(conn, ADA)
    assert await count_jobs(conn, ADA) == 5


async def test_one_insert_of_200_rows_is_refused_whole_by_the_unfinished_limit(
    conn: asyncpg.Connection,
) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="you already have 10 models waiting"):
        await bulk_insert_as(conn, ADA, 200)
    assert await count_jobs(conn, ADA) == 0
    await bulk_insert_as(conn, ADA, 10)
    assert await count_jobs(conn, ADA) == 10


async def test_one_update_cannot_set_more_failed_rows_back_to_pending_than_the_limits_allow(
    conn: asyncpg.Connection,
) -> None:
    await set_limit(conn, "max_unfinished_per_user", "NULL::integer")
    ids = [await insert_model(conn, ADA) for _ in range(30)]  # written by the server: no limits
    for model_id in ids:
        await fail_as_listener(conn, model_id)
    await set_limit(conn, "max_requests_per_day", "35")  # 30 spent: 5 left
    retry_all = "UPDATE public.ai_generated_models SET status = 'pending' WHERE user_id = $1"
    with pytest.raises(asyncpg.CheckViolationError, match="asked for 35 models in the last 24 hours"):
        async with as_app_user(conn, ADA):
            await conn.execute(retry_all, ADA)
    assert (
        await conn.fetchval("SELECT count(*) FROM public.ai_generated_models WHERE status = 'pending'") == 0
    )
    await set_limit(conn, "max_requests_per_day", "NULL::integer")
    await set_limit(conn, "max_unfinished_per_user", "10")
    with pytest.raises(asyncpg.CheckViolationError, match="you already have 10 models waiting"):
        async with as_app_user(conn, ADA):
            await conn.execute(retry_all, ADA)
    assert await conn.fetchval("SELECT count(*) FROM listener.jobs WHERE finished_at IS NULL") == 0


async def test_two_bulk_inserts_at_once_by_one_user_share_the_limit(
    db_url: str, conn: asyncpg.Connection
) -> None:
    await set_limit(conn, "max_requests_per_day", "8")
    other = await asyncpg.connect(db_url)
    watcher = await asyncpg.connect(db_url)
    try:
        first = conn.transaction()
        await first.start()
        await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", json.dumps({"sub": str(ADA)}))
        await conn.execute("SET LOCAL ROLE authenticated")
        await conn.execute(BULK_INSERT, ADA, 5)
        second = asyncio.create_task(bulk_insert_as(other, ADA, 5))
        await wait_for_lock_wait(watcher)  # the second statement waits for the first to end
        await first.commit()
        with pytest.raises(asyncpg.CheckViolationError, match="asked for 8 models"):
            await asyncio.wait_for(second, timeout=10)
    finally:
        await watcher.close()
        await other.close()
    assert await count_jobs(conn, ADA) == 5


async def test_many_rows_of_a_trusted_role_are_not_limited(conn: asyncpg.Connection) -> None:
    await set_limit(conn, "max_requests_per_day", "5")
    await conn.execute(BULK_INSERT, ADA, 200)
    assert await count_jobs(conn, ADA) == 200


# -- how long a request may be ------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "most"),
    [("prompt", 2000), ("source_image_url", 2048), ("art_style", 50), ("model_name", 200)],
)
async def test_texts_longer_than_their_limit_are_refused_by_name(
    app_db_url: str, column: str, most: int
) -> None:
    """On the app's own table, whose text columns have no length of their own."""
    insert = (
        "INSERT INTO public.ai_generated_models (user_id, generation_type, prompt, source_image_url, "
        "art_style, model_name, storage_path, status) "
        "VALUES ($1, 'text_to_3d', $2, $3, $4, $5, '', 'pending')"
    )
    conn = await asyncpg.connect(app_db_url)

    def fields(value: str) -> list[object]:
        texts = {"prompt": "a lamp", "source_image_url": None, "art_style": None, "model_name": "Lamp"}
        texts[column] = value
        return [ADA, *texts.values()]

    try:
        async with as_app_user(conn, ADA):
            await conn.execute(insert, *fields("é" * most))  # characters, not bytes, are counted
        with pytest.raises(asyncpg.CheckViolationError, match=f"{column} is too long: {most + 1} characters"):
            async with as_app_user(conn, ADA):
                await conn.execute(insert, *fields("é" * (most + 1)))
    finally:
        await conn.close()


async def test_a_claim_loads_no_more_of_a_text_than_its_limit(db_url: str, conn: asyncpg.Connection) -> None:
    """A row written by a trusted role around the limits still reaches the listener cut short."""
    model_id = await insert_model(conn, ADA, prompt="x" * 5_000_000)
    async with PgJobStore.connect(db_url) as db:
        (job,) = await db.claim(OWNER, 1, 1, 30, 8)
    assert job.model_id == model_id
    assert job.prompt is not None and len(job.prompt) == 2001


# -- what is the listener's alone -----------------------------------------------------------


@pytest.mark.parametrize("ended_as", ["failed", "cancelled", "completed"])
@pytest.mark.parametrize(
    "change",
    [
        "status = 'completed'",
        "download_url = 'https://evil.example/x.glb'",
        "storage_path = 'someone-else/x.glb'",
        "thumbnail_url = 'https://evil.example/t.png'",
        "file_size = 1",
        "model_dimensions = '{}'::jsonb",
    ],
)
async def test_an_owner_cannot_forge_what_the_listener_produced(
    conn: asyncpg.Connection, ended_as: str, change: str
) -> None:
    model_id = await insert_as(conn, ADA)
    await conn.execute(
        "UPDATE listener.jobs SET finished_at = now(), outcome = $2 WHERE model_id = $1", model_id, ended_as
    )
    await conn.execute("UPDATE public.ai_generated_models SET status = $2 WHERE id = $1", model_id, ended_as)
    if change == "status = 'completed'" and ended_as == "completed":
        return  # setting what is already so changes nothing
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="listener"):
        async with as_app_user(conn, ADA):
            await conn.execute(f"UPDATE public.ai_generated_models SET {change} WHERE id = $1", model_id)


async def test_an_owner_may_still_change_their_own_columns_of_a_finished_row(
    conn: asyncpg.Connection,
) -> None:
    model_id = await insert_as(conn, ADA)
    await fail_as_listener(conn, model_id)
    async with as_app_user(conn, ADA):
        await conn.execute(
            "UPDATE public.ai_generated_models SET is_favorite = true, model_name = 'Renamed' WHERE id = $1",
            model_id,
        )
    assert await conn.fetchval(
        "SELECT model_name FROM public.ai_generated_models WHERE id = $1", model_id
    ) == ("Renamed")


@pytest.mark.parametrize("ended_as", ["completed", "cancelled"])
async def test_an_owner_cannot_have_a_row_that_did_not_fail_generated_again(
    conn: asyncpg.Connection, ended_as: str
) -> None:
    model_id = await insert_as(conn, ADA)
    await conn.execute(
        "UPDATE listener.jobs SET finished_at = now(), outcome = $2 WHERE model_id = $1", model_id, ended_as
    )
    await conn.execute("UPDATE public.ai_generated_models SET status = $2 WHERE id = $1", model_id, ended_as)
    async with as_app_user(conn, ADA):  # the status is the owner's to write...
        await conn.execute("UPDATE public.ai_generated_models SET status = 'failed' WHERE id = $1", model_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only a model whose generation failed"):
        async with as_app_user(conn, ADA):  # ...but it does not make the generation a failed one
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'pending' WHERE id = $1", model_id
            )
    assert await conn.fetchval("SELECT outcome FROM listener.jobs WHERE model_id = $1", model_id) == ended_as


async def test_a_row_whose_generation_failed_may_be_retried(conn: asyncpg.Connection) -> None:
    model_id = await insert_as(conn, ADA)
    await fail_as_listener(conn, model_id)
    async with as_app_user(conn, ADA):
        await conn.execute("UPDATE public.ai_generated_models SET status = 'pending' WHERE id = $1", model_id)
    assert await conn.fetchval("SELECT finished_at FROM listener.jobs WHERE model_id = $1", model_id) is None


async def test_the_daily_budgets_memory_is_pruned_a_batch_at_a_time_and_keeps_what_counts(
    db_url: str, conn: asyncpg.Connection
) -> None:
    old = [await insert_as(conn, ADA) for _ in range(3)]
    await conn.execute(
        "UPDATE listener.requests SET requested_at = now() - interval '31 days' WHERE model_id = ANY($1)", old
    )
    await set_limit(conn, "max_requests_per_day", "2")
    await insert_as(conn, ADA)
    async with PgJobStore.connect(db_url) as db:
        assert await db.forget_old_requests(30, 2) == 2
        assert await db.forget_old_requests(30, 2) == 1
        assert await db.forget_old_requests(30, 2) == 0
    assert await conn.fetchval("SELECT count(*) FROM listener.requests") == 1
    assert await count_jobs(conn, ADA) == 4  # the app's rows and their jobs are not touched
    await insert_as(conn, ADA)
    with pytest.raises(asyncpg.CheckViolationError, match="asked for 2 models"):
        await insert_as(conn, ADA)  # what happened today still counts

"""What the database lets an app user do, and what the listener hears, after migration."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.support.database import as_app_user, insert_model
from tests.support.realtime import RealtimeTap

ADA = uuid.UUID("11111111-1111-1111-1111-111111111111")
BO = uuid.UUID("22222222-2222-2222-2222-222222222222")


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(db_url)
    yield connection
    await connection.close()


async def notifications_after(
    db_url: str, channel: str, action: asyncpg.Connection, statement: str, *args: object
) -> list[str]:
    """The payloads a LISTENing connection receives on `channel` while `statement` commits."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(db_url)
    try:
        await listener.add_listener(channel, lambda *a: heard.put_nowait(a[3]))
        await action.execute(statement, *args)
        # Notifications arrive in commit order: all that the statement sent come before a
        # sentinel sent once it has committed.
        sentinel = f"sentinel-{uuid.uuid4()}"
        await listener.execute("SELECT pg_notify($1, $2)", channel, sentinel)
        payloads = []
        while (payload := await asyncio.wait_for(heard.get(), timeout=10)) != sentinel:
            payloads.append(payload)
        return payloads
    finally:
        await listener.close()


async def test_pending_insert_notifies_its_id_and_other_statuses_do_not(
    db_url: str, conn: asyncpg.Connection
) -> None:
    insert = """
        INSERT INTO public.ai_generated_models
            (id, user_id, generation_type, prompt, model_name, storage_path, status)
        VALUES ($1, $2, 'text_to_3d', 'a lamp', 'Lamp', '', $3)
    """
    pending_id = uuid.uuid4()
    heard = await notifications_after(db_url, "listener_jobs", conn, insert, pending_id, ADA, "pending")
    assert heard == [str(pending_id)]

    for status in ("processing", "completed"):
        heard = await notifications_after(db_url, "listener_jobs", conn, insert, uuid.uuid4(), ADA, status)
        assert heard == []
    jobs = await conn.fetch("SELECT model_id FROM listener.jobs")
    assert [r["model_id"] for r in jobs] == [pending_id]


async def test_app_user_cannot_insert_for_someone_else_nor_see_their_rows(conn: asyncpg.Connection) -> None:
    bo_model = await insert_model(conn, BO)
    async with as_app_user(conn, ADA):
        assert await conn.fetchval("SELECT count(*) FROM public.ai_generated_models") == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM public.ai_generated_models WHERE id = $1", bo_model)
            == 0
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with as_app_user(conn, ADA):
            await insert_model(conn, BO)


async def test_pending_insert_by_app_user_starts_clean(conn: asyncpg.Connection) -> None:
    async with as_app_user(conn, ADA):
        model_id = await conn.fetchval(
            """
            INSERT INTO public.ai_generated_models
                (user_id, generation_type, prompt, model_name, storage_path, download_url, status)
            VALUES ($1, 'text_to_3d', 'a lamp', 'Lamp', 'forged/path.glb',
                    'https://evil.example/x.glb', 'pending')
            RETURNING id
            """,
            ADA,
        )
    row = await conn.fetchrow("SELECT * FROM public.ai_generated_models WHERE id = $1", model_id)
    assert row is not None
    assert (row["progress"], row["download_url"], row["storage_path"], row["error_message"]) == (
        0,
        None,
        "",
        None,
    )


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("status = 'completed'", "only change allowed now is cancelling"),
        ("download_url = 'https://evil.example/x.glb'", "only change allowed now is cancelling"),
        ("progress = 100", "written by the listener only"),
        ("error_message = 'oops'", "written by the listener only"),
        ("status = 'cancelled', prompt = 'changed'", "only change allowed now is cancelling"),
    ],
)
async def test_owner_cannot_touch_what_the_listener_writes(
    conn: asyncpg.Connection, assignment: str, message: str
) -> None:
    model_id = await insert_model(conn, ADA)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match=message):
        async with as_app_user(conn, ADA):
            await conn.execute(f"UPDATE public.ai_generated_models SET {assignment} WHERE id = $1", model_id)
    assert (
        await conn.fetchval("SELECT status FROM public.ai_generated_models WHERE id = $1", model_id)
        == "pending"
    )


async def test_owner_cancels_a_pending_row_and_the_listener_hears_it(
    db_url: str, conn: asyncpg.Connection
) -> None:
    model_id = await insert_model(conn, ADA)
    owner = await asyncpg.connect(db_url)
    try:
        await owner.execute("SELECT set_config('request.jwt.claims', $1, false)", f'{{"sub": "{ADA}"}}')
        await owner.execute("SET ROLE authenticated")
        heard = await notifications_after(
            db_url,
            "listener_cancels",
            owner,
            "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE id = $1",
            model_id,
        )
    finally:
        await owner.close()
    assert heard == [str(model_id)]
    job = await conn.fetchrow("SELECT * FROM listener.jobs WHERE model_id = $1", model_id)
    assert job is not None
    assert job["cancel_requested"] and job["outcome"] == "cancelled" and job["finished_at"] is not None


async def test_deleting_rows_tells_the_replicas_only_of_jobs_it_ended(
    db_url: str, conn: asyncpg.Connection
) -> None:
    waiting = await insert_model(conn, ADA)
    await insert_model(conn, ADA, status="processing")  # the app's older paths: no job
    finished = await insert_model(conn, ADA)
    await conn.execute(
        "UPDATE listener.jobs SET finished_at = now(), outcome = 'failed' WHERE model_id = $1", finished
    )
    await conn.execute("UPDATE public.ai_generated_models SET status = 'processing' WHERE id = $1", finished)
    heard = await notifications_after(
        db_url, "listener_cancels", conn, "DELETE FROM public.ai_generated_models WHERE user_id = $1", ADA
    )
    assert heard == [str(waiting)]


async def test_owner_retries_a_failed_row_a_bounded_number_of_times(
    db_url: str, conn: asyncpg.Connection
) -> None:
    model_id = await insert_model(conn, ADA)
    limit = await conn.fetchval("SELECT listener.max_owner_retries()")

    async def listener_fails_it() -> None:
        await conn.execute(
            "UPDATE listener.jobs SET finished_at = now(), outcome = 'failed' WHERE model_id = $1", model_id
        )
        await conn.execute(
            "UPDATE public.ai_generated_models SET status = 'failed', progress = 40, error_message = 'boom' "
            "WHERE id = $1",
            model_id,
        )

    for attempt in range(1, limit + 1):
        await listener_fails_it()
        async with as_app_user(conn, ADA):
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'pending' WHERE id = $1", model_id
            )
        row = await conn.fetchrow("SELECT * FROM public.ai_generated_models WHERE id = $1", model_id)
        assert row is not None
        assert (row["status"], row["progress"], row["error_message"]) == ("pending", 0, None)
        job = await conn.fetchrow("SELECT * FROM listener.jobs WHERE model_id = $1", model_id)
        assert job is not None
        assert job["finished_at"] is None and job["owner_retries"] == attempt

    await listener_fails_it()
    with pytest.raises(asyncpg.CheckViolationError, match="already retried"):
        async with as_app_user(conn, ADA):
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'pending' WHERE id = $1", model_id
            )


async def test_owner_keeps_todays_rules_on_rows_the_listener_does_not_own(conn: asyncpg.Connection) -> None:
    old_path = await insert_model(conn, ADA, status="processing")
    async with as_app_user(conn, ADA):
        await conn.execute(
            "UPDATE public.ai_generated_models SET status = 'completed', storage_path = 'a/b.glb', "
            "download_url = 'https://cdn.example/b.glb' WHERE id = $1",
            old_path,
        )
    assert (
        await conn.fetchval("SELECT status FROM public.ai_generated_models WHERE id = $1", old_path)
        == "completed"
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="written by the listener only"):
        async with as_app_user(conn, ADA):
            await conn.execute("UPDATE public.ai_generated_models SET progress = 50 WHERE id = $1", old_path)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only a model whose generation failed"):
        async with as_app_user(conn, ADA):
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'pending' WHERE id = $1", old_path
            )


async def test_listener_schema_is_out_of_reach_of_app_users(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for schema listener"):
        async with as_app_user(conn, ADA):
            await conn.fetch("SELECT * FROM listener.jobs")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with as_app_user(conn, ADA):
            await conn.fetch("SELECT listener.job_priority($1)", ADA)


async def test_app_user_rules_hold_on_the_existing_app_schema(app_db_url: str) -> None:
    conn = await asyncpg.connect(app_db_url)
    try:
        async with as_app_user(conn, ADA):
            model_id = await insert_model(conn, ADA)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only change allowed now is cancelling"):
            async with as_app_user(conn, ADA):
                await conn.execute(
                    "UPDATE public.ai_generated_models SET status = 'completed' WHERE id = $1", model_id
                )
        async with as_app_user(conn, ADA):
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE id = $1", model_id
            )
        assert (
            await conn.fetchval("SELECT outcome FROM listener.jobs WHERE model_id = $1", model_id)
            == "cancelled"
        )
    finally:
        await conn.close()


async def test_progress_update_reaches_the_realtime_publication(conn: asyncpg.Connection) -> None:
    model_id = await insert_model(conn, ADA)
    tap = RealtimeTap(conn)
    await tap.open()
    try:
        await conn.execute("UPDATE public.ai_generated_models SET progress = 42 WHERE id = $1", model_id)
        changes = await tap.updates()
    finally:
        await tap.close()
    # What Realtime streams: the updated row, its columns decoded, with the new progress.
    [update] = [c for c in changes if c["id"] == str(model_id) and c["progress"] == "42"]
    assert (update["user_id"], update["status"]) == (str(ADA), "pending")

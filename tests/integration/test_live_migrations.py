"""`listener migrate` on a live database: the app's queries never queue long behind it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest

from listener.adapters.postgres.migrate import load_migrations, migrate, pending
from listener.errors import MigrationBlocked
from tests.support.database import database_from


@pytest.fixture
async def half_migrated(templates: str) -> AsyncIterator[str]:
    """A database with the app's tables and none of the listener's changes yet."""
    async with database_from(templates, "template0") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, migrations=load_migrations()[:2])
            await conn.execute(
                "INSERT INTO public.ai_generated_models (user_id, generation_type, model_name, storage_path) "
                "SELECT gen_random_uuid(), 'text_to_3d', 'Old ' || n, 'x.glb' FROM generate_series(1, 100) n"
            )
        finally:
            await conn.close()
        yield url


async def test_an_open_app_transaction_makes_migrate_wait_briefly_then_name_it(half_migrated: str) -> None:
    app = await asyncpg.connect(half_migrated, server_settings={"application_name": "app-report"})
    other_app = await asyncpg.connect(half_migrated)
    conn = await asyncpg.connect(half_migrated)
    try:
        reading = app.transaction()
        await reading.start()
        await app.fetchval("SELECT count(*) FROM public.ai_generated_models")  # holds ACCESS SHARE
        migrating = asyncio.create_task(migrate(conn, lock_timeout_s=0.3, attempts=3))
        await asyncio.sleep(0.1)
        # The app's other queries go on, as Supabase's API role needs (it gives up after 8 s):
        # behind a migrate that waited for its lock forever this read would wait too and fail.
        await other_app.execute("SET lock_timeout = '2s'")
        assert await other_app.fetchval("SELECT count(*) FROM public.ai_generated_models") == 100
        with pytest.raises(MigrationBlocked) as blocked:
            await asyncio.wait_for(migrating, timeout=30)
        message = str(blocked.value)
        assert (
            "0003_models_for_listener" in message
            and "app-report" in message
            and "idle in transaction" in message
        )
        await reading.commit()
        applied = await migrate(conn, lock_timeout_s=0.3, attempts=3)
    finally:
        for c in (app, other_app, conn):
            await c.close()
    assert applied[0] == "0003_models_for_listener" and applied == [m.version for m in load_migrations()[2:]]


async def test_checks_are_added_without_a_scan_under_the_lock_and_validated_after(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        checks = await conn.fetch(
            "SELECT conname, convalidated FROM pg_constraint "
            "WHERE conrelid = 'public.ai_generated_models'::regclass "
            "AND conname IN ('ai_generated_models_progress_range', 'ai_generated_models_status_check')"
        )
    finally:
        await conn.close()
    assert sorted((r["conname"], r["convalidated"]) for r in checks) == [
        ("ai_generated_models_progress_range", True),
        ("ai_generated_models_status_check", True),
    ]
    assert "NOT VALID" in next(m.sql for m in load_migrations() if m.version.startswith("0003"))


async def test_a_database_that_applied_an_earlier_text_of_a_migration_is_not_warned(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    migration = next(m for m in load_migrations() if m.version.startswith("0003"))
    (earlier,) = migration.known_checksums - {migration.checksum}
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "UPDATE listener.schema_migrations SET checksum = $2 WHERE version = $1",
            migration.version,
            earlier,
        )
        with caplog.at_level(logging.WARNING, logger="listener.adapters.postgres.migrate"):
            assert await migrate(conn) == []
        assert [r for r in caplog.records if r.getMessage() == "migration_changed_after_apply"] == []
        await conn.execute(
            "UPDATE listener.schema_migrations SET checksum = 'edited' WHERE version = $1", migration.version
        )
        with caplog.at_level(logging.WARNING, logger="listener.adapters.postgres.migrate"):
            await migrate(conn)
        assert [r.version for r in caplog.records if r.getMessage() == "migration_changed_after_apply"] == [  # type: ignore[attr-defined]
            migration.version
        ]
        assert await pending(conn) == []
    finally:
        await conn.close()

"""`listener migrate` and `listener run` as hosted Supabase's `postgres` role: no superuser."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from listener.adapters.postgres.jobs import PgJobStore
from tests.support.database import APP_SCHEMA, as_app_user, database_from, insert_model
from tests.support.stack import Stack, running_listener, wait_for_status

REPO = Path(__file__).resolve().parents[2]
# What Supabase gives its `postgres` role: everything but superuser.
SUPABASE_POSTGRES = "NOSUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS LOGIN"
APP_TABLES = (
    "ai_generated_models",
    "gcode_files",
    "model_print_history",
    "community_posts",
    "stl_files",
    "user_device_tokens",
    "notifications",
    "user_notification_settings",
)


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}").geturl()


@pytest.fixture
async def app_database(templates: str) -> AsyncIterator[str]:
    """The app's database as it stands before the listener, owned as on hosted Supabase."""
    async with database_from(templates, "template0") as url:
        admin = await asyncpg.connect(url)
        role = f"supa_{uuid.uuid4().hex[:8]}"
        try:
            await admin.execute(APP_SCHEMA.read_text(encoding="utf-8"))
            await admin.execute(f"CREATE ROLE {role} {SUPABASE_POSTGRES}")
            database = await admin.fetchval("SELECT current_database()")
            await admin.execute(f'ALTER DATABASE "{database}" OWNER TO {role}')
            await admin.execute(f"ALTER SCHEMA public OWNER TO {role}")
            for table in APP_TABLES:
                if await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}"):
                    await admin.execute(f"ALTER TABLE public.{table} OWNER TO {role}")
            await admin.execute(f"ALTER PUBLICATION supabase_realtime OWNER TO {role}")
            # What Supabase grants `postgres` on the auth schema, which supabase_auth_admin owns.
            await admin.execute(f"GRANT USAGE ON SCHEMA auth TO {role}")
            await admin.execute(f"GRANT SELECT, REFERENCES ON auth.users TO {role}")
            # Storage's schema belongs to supabase_storage_admin; postgres may read the buckets.
            await admin.execute(f"GRANT USAGE ON SCHEMA storage TO {role}")
            await admin.execute(f"GRANT SELECT ON storage.buckets TO {role}")
        finally:
            await admin.close()
        yield as_role(url, role)


def migrate_cli(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "listener", "migrate"],
        env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        cwd=REPO / "tests",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_migrate_and_claim_as_supabases_postgres_role(app_database: str) -> None:
    result = migrate_cli(app_database)
    assert result.returncode == 0, result.stderr
    assert "applied" in result.stdout
    conn = await asyncpg.connect(app_database)
    app = await asyncpg.connect(as_role(app_database, "postgres"))  # stands in for PostgREST
    try:
        assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        owner = uuid.uuid4()
        await app.execute("INSERT INTO auth.users (id) VALUES ($1)", owner)
        async with as_app_user(app, owner):
            model_id = await insert_model(app, owner)
        async with PgJobStore.connect(app_database) as db:
            (job,) = await db.claim("replica-a", 1, 1, 30, 8)
            assert job.model_id == model_id
            assert await db.give_up_jobs(8) == []  # the sweep's statements run as this role too
    finally:
        await conn.close()
        await app.close()
    assert migrate_cli(app_database).stdout.strip() == "database is up to date"


async def test_migrate_as_a_role_that_does_not_own_the_table_changes_nothing_and_says_why(
    app_database: str,
) -> None:
    admin_url = as_role(app_database, "postgres")
    admin = await asyncpg.connect(admin_url)
    stranger = f"stranger_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute(f"CREATE ROLE {stranger} {SUPABASE_POSTGRES}")
        await admin.execute(
            f'GRANT CREATE ON DATABASE "{await admin.fetchval("SELECT current_database()")}" TO {stranger}'
        )
        result = migrate_cli(as_role(app_database, stranger))
        schemas = await admin.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = 'listener'")
    finally:
        await admin.close()
    assert result.returncode == 1
    assert "does not own public.ai_generated_models" in result.stderr
    assert schemas == 0  # nothing was changed


async def test_a_whole_row_runs_as_supabases_postgres_role(app_database: str, stack: Stack) -> None:
    """Claim, progress, completion, the notification row: every statement of `run` as that role."""
    assert migrate_cli(app_database).returncode == 0
    app = await asyncpg.connect(as_role(app_database, "postgres"))  # stands in for PostgREST
    try:
        owner = uuid.uuid4()
        await app.execute("INSERT INTO auth.users (id) VALUES ($1)", owner)
        async with as_app_user(app, owner):
            model_id = await insert_model(app, owner)
        async with running_listener(stack.settings(DATABASE_URL=app_database)):
            rows = await wait_for_status(app, [model_id])
        notices = await app.fetchval(
            "SELECT count(*) FROM public.notifications WHERE related_id = $1", str(model_id)
        )
    finally:
        await app.close()
    assert rows[model_id]["status"] == "completed"
    assert notices == 1

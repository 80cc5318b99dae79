"""Test databases: one embedded Postgres per session, templates migrated once, a database per test."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from listener.adapters.postgres.migrate import migrate

FRESH_TEMPLATE = "listener_fresh_template"
APP_TEMPLATE = "listener_app_template"
APP_SCHEMA = Path(__file__).parent.parent / "fixtures" / "supabase_app_schema.sql"


def dsn_for(admin_dsn: str, database: str) -> str:
    """The admin connection string, pointed at another database."""
    return urlsplit(admin_dsn)._replace(path=f"/{database}").geturl()


async def _recreate(admin: asyncpg.Connection, name: str, template: str = "template0") -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


async def build_templates(admin_dsn: str) -> None:
    """A fresh database migrated, and the app's existing schema migrated, as templates."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await _recreate(admin, FRESH_TEMPLATE)
        await _recreate(admin, APP_TEMPLATE)
    finally:
        await admin.close()
    fresh = await asyncpg.connect(dsn_for(admin_dsn, FRESH_TEMPLATE))
    try:
        await migrate(fresh)
    finally:
        await fresh.close()
    app = await asyncpg.connect(dsn_for(admin_dsn, APP_TEMPLATE))
    try:
        await app.execute(APP_SCHEMA.read_text(encoding="utf-8"))
        await migrate(app)
    finally:
        await app.close()


@asynccontextmanager
async def database_from(admin_dsn: str, template: str) -> AsyncIterator[str]:
    """A new database copied from `template`, dropped afterwards; yields its connection string."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await _recreate(admin, name, template)
        yield dsn_for(admin_dsn, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def as_app_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> AsyncIterator[None]:
    """A transaction in which `conn` acts as Supabase's `authenticated` role for this user."""
    async with conn.transaction():
        claims = json.dumps({"sub": str(user_id), "role": "authenticated"})
        await conn.execute("SELECT set_config('request.jwt.claims', $1, true)", claims)
        await conn.execute("SET LOCAL ROLE authenticated")
        yield


async def insert_model(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    *,
    status: str = "pending",
    generation_type: str = "text_to_3d",
    prompt: str | None = "a small wooden boat",
    source_image_url: str | None = None,
    model_name: str = "Boat",
) -> uuid.UUID:
    """Inserts a row as a frontend does; returns its id."""
    model_id: uuid.UUID = await conn.fetchval(
        """
        INSERT INTO public.ai_generated_models
            (user_id, generation_type, prompt, source_image_url, model_name, storage_path, status)
        VALUES ($1, $2, $3, $4, $5, '', $6)
        RETURNING id
        """,
        user_id,
        generation_type,
        prompt,
        source_image_url,
        model_name,
        status,
    )
    return model_id


async def wait_for_lock_wait(
    conn: asyncpg.Connection, application_name: str | None = None, timeout_s: float = 10
) -> None:
    """Waits until another session of this database waits for a lock (of `application_name`, if given)."""
    deadline = time.monotonic() + timeout_s
    # Inside a transaction pg_stat_activity is read once and kept: each look takes a fresh one.
    while await conn.execute("SELECT pg_stat_clear_snapshot()") and not await conn.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' "
        "AND ($1::text IS NULL OR application_name = $1)",
        application_name,
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"no session waited for a lock within {timeout_s} s")
        await asyncio.sleep(0.01)

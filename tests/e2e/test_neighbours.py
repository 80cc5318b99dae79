"""The neighbours misbehave as real ones do: the AI server down or hanging up, files lost, rows deleted,
and Storage's S3 endpoint refusing what it does not understand."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from listener.sizes import MIB
from tests.support.database import as_app_user, insert_model
from tests.support.stack import Stack, run_rows, running_listener, wait_for_status, wait_until

GOOD = {"prompt": "a small wooden boat"}
# What Supabase Storage's S3 endpoint refuses, and botocore sends unless told not to: flexible
# checksums (as headers, or as a trailer of an aws-chunked body).
REFUSED_HEADER_PREFIXES = (
    "x-amz-checksum",
    "x-amz-sdk-checksum",
    "x-amz-trailer",
    "x-amz-decoded-content-length",
)


def refused_headers(headers: dict[str, str]) -> list[str]:
    """The headers of one request that Supabase Storage would refuse."""
    found = [name for name in headers if name.startswith(REFUSED_HEADER_PREFIXES)]
    if "aws-chunked" in headers.get("content-encoding", ""):
        found.append("content-encoding: aws-chunked")
    if headers.get("x-amz-content-sha256", "").startswith("STREAMING-"):
        found.append("x-amz-content-sha256: STREAMING-*")
    return found


async def test_uploads_carry_no_header_supabase_storage_refuses(stack: Stack) -> None:
    """A model large enough for a multipart upload, an STL and a thumbnail: every write is plain."""
    stack.simulator.config.glb_size = 9 * MIB  # above the multipart threshold (8 MiB)
    (row,) = await run_rows(stack, [GOOD])
    assert (row["status"], row["error_message"]) == ("completed", None)
    model_id = str(row["id"])
    writes = [
        (method, target, headers)
        for method, target, headers in stack.s3.requests_with_headers
        if method in ("PUT", "POST") and model_id in target
    ]
    # The multipart upload (start, parts, end), the STL and the thumbnail were all seen.
    assert any("uploads" in target for _, target, _ in writes) and any(
        "partNumber" in t for _, t, _ in writes
    )
    assert {target.split("?")[0].rsplit(".", 1)[-1] for _, target, _ in writes} == {"glb", "stl", "png"}
    assert [(m, t, refused_headers(h)) for m, t, h in writes if refused_headers(h)] == []
    assert stack.s3.object_info(row["storage_path"])[0] == row["file_size"] > 8 * MIB


async def test_an_ai_server_down_for_a_few_polls_is_waited_out(stack: Stack) -> None:
    stack.simulator.config.duration_s = 2
    owner = uuid.uuid4()
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings()):
            async with as_app_user(conn, owner):
                model_id = await insert_model(conn, owner)
            await wait_until(
                conn, "SELECT ai_task_id IS NOT NULL FROM listener.jobs WHERE model_id = $1", model_id
            )
            stack.simulator.config.down = True
            await wait_until_true(lambda: stack.simulator.answered_down >= 3, "three polls answered 503")
            stack.simulator.config.down = False
            rows = await wait_for_status(conn, [model_id])
    finally:
        await conn.close()
    assert (rows[model_id]["status"], rows[model_id]["error_message"]) == ("completed", None)
    assert len(stack.simulator.submissions) == 1


async def test_polls_whose_connection_is_dropped_are_retried(stack: Stack) -> None:
    stack.simulator.config.fail_polls_next_n = 3
    stack.simulator.config.poll_drop_connection = True
    (row,) = await run_rows(stack, [GOOD])
    assert (row["status"], row["error_message"]) == ("completed", None)
    assert stack.simulator.config.fail_polls_next_n == 0  # the three were dropped...
    assert len(stack.simulator.submissions) == 1  # ...and nothing was sent twice


async def test_an_stl_lost_three_times_still_lets_the_row_complete_without_it(stack: Stack) -> None:
    stack.simulator.config.lose_files_kind = "stl"
    stack.simulator.config.lose_files_next_n = 3
    (row,) = await run_rows(stack, [GOOD])
    assert (row["status"], row["error_message"]) == ("completed", None)
    assert (row["stl_storage_path"], row["stl_download_url"]) == (None, None)
    assert row["thumbnail_url"] is not None
    stl_fetches = sum(n for name, n in stack.simulator.file_fetches.items() if name.endswith(".stl"))
    assert stl_fetches == 3  # asked for three times, each time anew after a fresh poll
    (submission,) = stack.simulator.submissions
    assert stack.s3.read_object(row["storage_path"]) == stack.simulator.produced[submission.task_id]["glb"]


async def test_a_row_deleted_mid_generation_is_dropped_and_the_rest_are_served(stack: Stack) -> None:
    owner = uuid.uuid4()
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings()):
            async with as_app_user(conn, owner):
                deleted = await insert_model(conn, owner, prompt="a boat deleted midway")
            await wait_until(
                conn, "SELECT ai_task_id IS NOT NULL FROM listener.jobs WHERE model_id = $1", deleted
            )
            async with as_app_user(conn, owner):
                await conn.execute("DELETE FROM public.ai_generated_models WHERE id = $1", deleted)
            # Rows asked for after the delete complete: by then the deleted one would have too.
            async with as_app_user(conn, owner):
                later = await insert_model(conn, owner, prompt="a boat asked for later")
            rows = await wait_for_status(conn, [later])
            left = await conn.fetchval(
                "SELECT count(*) FROM public.ai_generated_models WHERE id = $1", deleted
            ) + await conn.fetchval("SELECT count(*) FROM listener.jobs WHERE model_id = $1", deleted)
            told = await conn.fetchval(
                "SELECT count(*) FROM public.notifications WHERE related_id = $1", str(deleted)
            )
    finally:
        await conn.close()
    assert rows[later]["status"] == "completed"
    assert (left, told) == (0, 0)
    assert not [target for _, target in stack.s3.requests if str(deleted) in target]
    assert [s.fields["prompt"] for s in stack.simulator.submissions] == [
        "a boat deleted midway",
        "a boat asked for later",
    ]


async def wait_until_true(predicate: object, what: str, timeout_s: float = 20) -> None:
    """Waits until `predicate()` holds. Fails after `timeout_s`."""
    assert callable(predicate)
    for _ in range(int(timeout_s / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened within {timeout_s} s: {what}")


async def test_rows_asked_for_while_the_ai_server_answers_503_complete_once_it_is_back(stack: Stack) -> None:
    """Every request answered 503 (a proxy in front of a server that is away): no row fails for it."""
    stack.simulator.config.down = True
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings()):
            ids = []
            for n in range(2):
                owner = uuid.uuid4()
                async with as_app_user(conn, owner):
                    ids.append(await insert_model(conn, owner, prompt=f"a lamp {n}"))
            await wait_until_true(lambda: stack.simulator.answered_down >= 3, "submissions answered 503")
            states = await conn.fetch(
                "SELECT status FROM public.ai_generated_models WHERE id = ANY($1::uuid[])", ids
            )
            assert {r["status"] for r in states} <= {"pending", "processing"}
            stack.simulator.config.down = False
            rows = await wait_for_status(conn, ids)
    finally:
        await conn.close()
    assert [(rows[i]["status"], rows[i]["error_message"]) for i in ids] == [("completed", None)] * 2
    assert sorted(s.fields["prompt"] for s in stack.simulator.submissions) == ["a lamp 0", "a lamp 1"]

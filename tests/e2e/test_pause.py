"""A running listener under `listener pause`: rows in flight go on, waiting rows wait, resume claims them."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg

from tests.support.cli import run_listener
from tests.support.database import as_app_user, insert_model
from tests.support.stack import Stack, running_listener, wait_for_status


async def test_a_running_listener_lets_rows_in_flight_finish_and_claims_the_waiting_ones_on_resume(
    stack: Stack, tmp_path: Path
) -> None:
    stack.simulator.config.duration_s = 2.0
    conn = await asyncpg.connect(stack.db_url)
    try:
        async with running_listener(stack.settings()):
            owner = uuid.uuid4()
            async with as_app_user(conn, owner):
                in_flight = await insert_model(conn, owner)
            await wait_for_status(conn, [in_flight], ("processing",))
            assert (await run_listener(stack.db_url, "pause", cwd=tmp_path))[0] == 0
            async with as_app_user(conn, owner):
                waiting = await insert_model(conn, owner)
            finished = await wait_for_status(conn, [in_flight])  # the row in flight runs to its end
            still = await conn.fetchval(
                "SELECT status FROM public.ai_generated_models WHERE id = $1", waiting
            )
            shown = await run_listener(stack.db_url, "status", cwd=tmp_path)
            assert (await run_listener(stack.db_url, "resume", cwd=tmp_path))[0] == 0
            resumed = await wait_for_status(conn, [waiting])
    finally:
        await conn.close()
    assert finished[in_flight]["status"] == "completed"
    assert still == "pending"  # the sweeps and notifications meanwhile claimed nothing
    assert "CLAIMS PAUSED by cli" in shown[1]
    assert resumed[waiting]["status"] == "completed"

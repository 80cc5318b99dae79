"""`listener pause` and `resume` against the database: no replica claims while paused; each is recorded."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import asyncpg

from listener.adapters.postgres.jobs import PgJobStore
from tests.support.cli import run_listener
from tests.support.database import insert_model

OWNER = "replica-a:1:abc"


async def test_no_replica_claims_while_paused_even_one_that_has_not_heard(
    db_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        waiting = await insert_model(conn, uuid.uuid4())
        paused = await run_listener(db_url, "pause", "--reason", "a bad release", cwd=tmp_path)
        async with PgJobStore.connect(db_url, max_size=2) as jobs:
            while_paused = await jobs.claim(OWNER, 10, 10, 30, 8)
            status = await run_listener(db_url, "status", "--json", cwd=tmp_path)
            resumed = await run_listener(db_url, "resume", cwd=tmp_path)
            after = await jobs.claim(OWNER, 10, 10, 30, 8)
        again = await run_listener(db_url, "resume", cwd=tmp_path)
        audit = await conn.fetch("SELECT actor, action, detail FROM listener.audit ORDER BY id")
    finally:
        await conn.close()
    assert paused[0] == 0 and "claims paused for every replica" in paused[1]
    assert while_paused == []
    assert json.loads(status[1])["paused"]["by"] == "cli"
    assert json.loads(status[1])["paused"]["reason"] == "a bad release"
    assert resumed[0] == 0 and "claims resumed (paused by cli)" in resumed[1]
    assert [job.model_id for job in after] == [waiting]
    assert again[0] == 0 and "claims were not paused" in again[1]
    assert [(r["actor"], r["action"]) for r in audit] == [("cli", "pause"), ("cli", "resume")]
    assert json.loads(audit[0]["detail"]) == {"reason": "a bad release"}

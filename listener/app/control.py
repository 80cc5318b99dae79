"""`listener pause` and `listener resume`: claims stopped and started for every replica, on the record."""

from __future__ import annotations

import asyncpg

from listener.adapters.postgres.queries import query
from listener.app.status import operator_connection

# Who acts from the command line, in the audit list (a dashboard session names itself).
CLI_ACTOR = "cli"


async def _run(database_url: str, name: str, *args: object) -> asyncpg.Record | None:
    async with operator_connection(database_url) as conn:
        row: asyncpg.Record | None = await conn.fetchrow(query(name), *args)
    return row


async def pause(database_url: str, reason: str | None, actor: str = CLI_ACTOR) -> str:
    """Pauses claims for every replica; rows in flight go on. Returns what to tell the operator."""
    await _run(database_url, "claims_pause", actor, reason)
    return "claims paused for every replica: new rows wait pending, rows in flight go on"


async def resume(database_url: str, actor: str = CLI_ACTOR) -> str:
    """Resumes claims and wakes every replica. Returns what to tell the operator."""
    ended = await _run(database_url, "claims_resume", actor)
    if ended is None:
        return "claims were not paused"
    return f"claims resumed (paused by {ended['paused_by']})"

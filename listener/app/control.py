"""`listener pause` and `listener resume`: claims stopped and started for every replica, on the record."""

from __future__ import annotations

import asyncpg

from listener.adapters.postgres.pool import connect_kwargs
from listener.adapters.postgres.queries import query
from listener.errors import StatusUnavailable
from listener.redact import redact_url, scrub

CONNECT_TIMEOUT_S = 5.0
# Who acts from the command line, in the audit list (a dashboard session names itself).
CLI_ACTOR = "cli"


async def _run(database_url: str, name: str, *args: object) -> asyncpg.Record | None:
    safe_url = redact_url(database_url)
    try:
        conn = await asyncpg.connect(**{**connect_kwargs(database_url), "timeout": CONNECT_TIMEOUT_S})
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StatusUnavailable(f"cannot reach the database at {safe_url}: {scrub(str(exc))}") from exc
    try:
        row: asyncpg.Record | None = await conn.fetchrow(query(name), *args)
        return row
    except asyncpg.UndefinedTableError as exc:
        raise StatusUnavailable(f"{safe_url} lacks the listener's tables; run `listener migrate`") from exc
    finally:
        await conn.close()


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

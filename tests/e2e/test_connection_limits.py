"""A database that refuses connections beyond a limit: rows wait for a connection, none fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.support.pooler import SessionPooler
from tests.support.stack import Stack, run_rows


def with_port(url: str, port: int, user: str | None = None) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{user or parts.username}@127.0.0.1:{port}").geturl()


@pytest.fixture
async def pooler(stack: Stack) -> AsyncIterator[SessionPooler]:
    """Three clients at a time, as a small project's session pooler would allow one replica."""
    port = urlsplit(stack.db_url).port
    assert port is not None
    server = SessionPooler(port, max_clients=3)
    await server.start()
    yield server
    await server.stop()


async def test_a_full_session_pooler_holds_rows_back_and_fails_none(
    stack: Stack, pooler: SessionPooler
) -> None:
    rows = await run_rows(
        stack,
        [{"prompt": f"a lamp number {n}"} for n in range(8)],
        DATABASE_URL=with_port(stack.db_url, pooler.port),
        LISTENER_CONCURRENCY="8",
    )
    assert [row["status"] for row in rows] == ["completed"] * 8
    assert pooler.refused > 0  # the pooler did say no, and no row paid for it


async def test_a_role_with_a_connection_limit_below_the_pool_completes_all_its_rows(stack: Stack) -> None:
    conn = await asyncpg.connect(stack.db_url)
    try:
        # Membership in the owner gives the tables' privileges; a superuser would ignore the limit.
        await conn.execute("CREATE ROLE limited_listener LOGIN CONNECTION LIMIT 2 IN ROLE postgres")
    finally:
        await conn.close()
    port = urlsplit(stack.db_url).port
    assert port is not None
    rows = await run_rows(
        stack,
        [{"prompt": f"a boat number {n}"} for n in range(6)],
        DATABASE_URL=with_port(stack.db_url, port, user="limited_listener"),
        LISTENER_CONCURRENCY="6",
    )
    assert [row["status"] for row in rows] == ["completed"] * 6

"""The database going away at the worst moments: no row fails, none is generated twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.support.database import as_app_user, insert_model
from tests.support.link_proxy import LinkProxy
from tests.support.stack import Stack, running_listener, wait_for_status


@pytest.fixture
async def link(stack: Stack) -> AsyncIterator[LinkProxy]:
    """A link between the listener and Postgres that the test can cut."""
    port = urlsplit(stack.db_url).port
    assert port is not None
    proxy = LinkProxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def _through(stack: Stack, link: LinkProxy) -> str:
    return urlsplit(stack.db_url)._replace(netloc=f"postgres@127.0.0.1:{link.port}").geturl()


async def _wait(condition: object, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within time"
        await asyncio.sleep(0.02)


async def test_a_submission_answered_while_the_database_is_down_is_not_sent_again(
    stack: Stack, link: LinkProxy
) -> None:
    """The generation runs from its submission: its id waits for the database; the row is not handed back."""
    stack.simulator.config.submit_delay_s = 1.0  # the task starts at once; its id comes a second later
    conn = await asyncpg.connect(stack.db_url)
    try:
        owner = uuid.uuid4()
        async with as_app_user(conn, owner):
            model_id = await insert_model(conn, owner)
        async with running_listener(stack.settings(DATABASE_URL=_through(stack, link))):
            await _wait(lambda: len(stack.simulator.submissions) == 1)
            link.cut()  # the database goes down while the AI server is answering
            await asyncio.sleep(2.5)  # the answer came; longer than the retry budget and the lease
            link.heal()
            rows = await wait_for_status(conn, [model_id], timeout_s=40)
    finally:
        await conn.close()
    assert rows[model_id]["status"] == "completed"
    assert len(stack.simulator.submissions) == 1

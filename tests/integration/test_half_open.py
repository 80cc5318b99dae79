"""A link to Postgres that goes silent without closing (half-open): noticed, given up, and got over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from listener.adapters.postgres.listen import PgListener
from listener.adapters.postgres.pool import PgPool
from listener.errors import DatabaseUnavailable
from tests.support.link_proxy import LinkProxy


@pytest.fixture
async def proxy(db_url: str) -> AsyncIterator[LinkProxy]:
    port = urlsplit(db_url).port
    assert port is not None
    proxy = LinkProxy(port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def _through(db_url: str, proxy: LinkProxy) -> str:
    return urlsplit(db_url)._replace(netloc=f"postgres@127.0.0.1:{proxy.port}").geturl()


async def test_a_connection_attempt_on_a_silent_link_is_given_up(
    db_url: str, proxy: LinkProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not after asyncpg's own minute: the link may long work again by then."""
    monkeypatch.setattr("listener.adapters.postgres.pool.CONNECT_TIMEOUT_S", 0.5, raising=False)
    async with PgPool.connect(_through(db_url, proxy), max_size=2) as pg:
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(pg.ping(), timeout=10)
        assert time.monotonic() - started < 5
        proxy.resume()
        await pg.ping()


async def test_statements_waiting_on_a_silent_link_fail_at_once_when_the_pool_is_dropped(
    db_url: str, proxy: LinkProxy
) -> None:
    async with PgPool.connect(_through(db_url, proxy), max_size=2) as pg:
        await pg.ping()
        proxy.stall()
        waiting = asyncio.create_task(pg.ping())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # no answer, and no error either: the link is silent
        assert pg.drop_connections() == 1
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(waiting, timeout=2)
        assert pg.budget.in_use == 0
        proxy.resume()
        await asyncio.wait_for(pg.ping(), timeout=5)  # a new connection, on a link that works


class _Handler:
    def __init__(self) -> None:
        self.connects = 0

    def on_job(self, payload: str) -> None:
        pass

    def on_cancel(self, payload: str) -> None:
        pass

    def on_connect(self) -> None:
        self.connects += 1


async def test_the_listen_check_tells_when_its_link_goes_silent(db_url: str, proxy: LinkProxy) -> None:
    """The LISTEN connection's check is what notices a silent link: it says so, and the pool is dropped."""
    silent = asyncio.Event()
    listener = PgListener(
        _through(db_url, proxy), check_interval_s=0.2, check_timeout_s=0.5, on_silent=silent.set
    )
    handler = _Handler()
    listening = asyncio.create_task(listener.run(handler))
    try:
        for _ in range(100):
            if listener.ready:
                break
            await asyncio.sleep(0.05)
        assert listener.ready
        proxy.stall()
        await asyncio.wait_for(silent.wait(), timeout=5)
        assert not listener.ready
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)

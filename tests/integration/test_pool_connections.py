"""The pool's connections through restarts and cancellations: none used broken, none held for good."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg
import pytest

from listener.adapters.postgres.pool import ConnectionBudget, PgPool
from tests.support.pooler import error_response

ADMIN_SHUTDOWN = error_response("57P01", "terminating connection due to administrator command")

if TYPE_CHECKING:
    from listener.adapters.postgres.pool import PooledConnection


class GoodbyeProxy:
    """Forwards to Postgres; `goodbye()` says what a restarting server says, then closes a little later."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.clients: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.pipes: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.clients.append((writer, upstream))
        pipes = [
            asyncio.create_task(_pipe(reader, upstream)),
            asyncio.create_task(_pipe(upstream_reader, writer)),
        ]
        self.pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)

    async def goodbye(self, close_after_s: float) -> None:
        """Every client hears FATAL 57P01 now, as the server ends it, and is closed `close_after_s` later."""
        clients, self.clients = self.clients, []
        for client, _ in clients:
            client.write(ADMIN_SHUTDOWN)
        await asyncio.sleep(close_after_s)
        for client, upstream in clients:
            upstream.close()
            client.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for client, upstream in self.clients:
            client.close()
            upstream.close()
        await asyncio.gather(*self.pipes, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.close()


class PoolWith:
    """The pool, with its `acquire` or `release` replaced (asyncpg's Pool has read-only attributes)."""

    def __init__(self, pool: asyncpg.Pool, **replaced: object) -> None:
        self._pool = pool
        self._replaced = replaced

    def __getattr__(self, name: str) -> object:
        return self._replaced.get(name, getattr(self._pool, name))


def _through(db_url: str, port: int) -> str:
    return urlsplit(db_url)._replace(netloc=f"postgres@127.0.0.1:{port}").geturl()


async def test_a_connection_the_server_ended_while_idle_is_never_used(db_url: str) -> None:
    """Between the server's goodbye and its close, the idle connection looks open: it is not used."""
    port = urlsplit(db_url).port
    assert port is not None
    proxy = GoodbyeProxy(port)
    await proxy.start()
    try:
        # One connection: the statement after the goodbye is offered the connection that heard it.
        async with PgPool.connect(_through(db_url, proxy.port), max_size=1) as pg:
            assert await pg.fetchval("ping") == 1
            goodbye = asyncio.create_task(proxy.goodbye(close_after_s=1.0))
            await asyncio.sleep(0.2)  # the goodbye has arrived; the close has not
            assert await pg.fetchval("ping") == 1
            await goodbye
            assert pg.budget.in_use == 0
    finally:
        await proxy.stop()


async def test_a_connection_lost_as_it_is_handed_back_fails_nothing_and_holds_no_budget(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement answered: the pool failing to reset the connection afterwards changes nothing."""
    async with PgPool.connect(db_url, max_size=2) as pg:
        release = pg.pool.release

        async def release_then_fail(conn: PooledConnection, **kwargs: object) -> None:
            await release(conn)
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation")

        monkeypatch.setattr(pg, "pool", PoolWith(pg.pool, release=release_then_fail))
        assert await pg.fetchval("ping") == 1
        assert pg.budget.in_use == 0


async def test_a_caller_cancelled_while_its_connection_is_handed_back_gives_its_budget_back(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PgPool.connect(db_url, max_size=2) as pg:
        release = pg.pool.release
        releasing, go_on = asyncio.Event(), asyncio.Event()
        handing_back: list[asyncio.Future[None]] = []

        async def slow_release(conn: PooledConnection, **kwargs: object) -> None:
            async def later() -> None:
                await go_on.wait()
                await release(conn)

            # As asyncpg's own release: shielded, so that the connection does go back.
            handing_back.append(asyncio.ensure_future(later()))
            releasing.set()
            await asyncio.shield(handing_back[0])

        monkeypatch.setattr(pg, "pool", PoolWith(pg.pool, release=slow_release))
        call = asyncio.create_task(pg.fetchval("ping"))
        await asyncio.wait_for(releasing.wait(), timeout=5)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        assert pg.budget.in_use == 0
        go_on.set()
        await handing_back[0]


async def test_a_caller_cancelled_while_it_waits_for_a_connection_gives_its_budget_back(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PgPool.connect(db_url, max_size=2) as pg:
        connecting = asyncio.Event()

        async def never_connects(**kwargs: object) -> asyncpg.Connection:
            connecting.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        monkeypatch.setattr(pg, "pool", PoolWith(pg.pool, acquire=never_connects))
        call = asyncio.create_task(pg.fetchval("ping"))
        await asyncio.wait_for(connecting.wait(), timeout=5)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        assert pg.budget.in_use == 0


async def test_the_budget_grows_back_with_time_while_every_caller_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a refusal shrank it, a waiting caller gets room as the budget grows, not only on a give-back."""
    monkeypatch.setattr(ConnectionBudget, "GROW_AFTER_S", 0.2)
    budget = ConnectionBudget(3)
    await budget.take()
    await budget.take()
    assert budget.give_back(refused=True)  # one of two refused: the budget shrinks to the one that works
    assert budget.allowed == 1
    await asyncio.wait_for(budget.take(), timeout=2)  # nobody gives back; time alone makes room
    assert budget.in_use == 2

"""The PgPool edge: a pool for the listener's statements, bounded by what the server grants."""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

import asyncpg

from listener.adapters.postgres.queries import query
from listener.errors import DatabaseUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

# What a lost or restarting database raises; the statement is worth trying again.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.InternalClientError,  # a connection left mid-operation by a lost server
    asyncpg.LockNotAvailableError,  # a lock_timeout the role runs with
    asyncpg.QueryCanceledError,  # a statement_timeout the role runs with
)
# What refusing to hand out or take back a connection raises: any server error, or the above.
_REFUSALS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *_CONNECTION_ERRORS)
if TYPE_CHECKING:  # asyncpg's proxy is generic only in its type stubs
    from asyncpg.pool import PoolConnectionProxy

    # A connection as the pool hands it out.
    PooledConnection: TypeAlias = PoolConnectionProxy[asyncpg.Record]


# A connection attempt that has not completed by then is given up: on a path gone silent it
# would otherwise wait asyncpg's own minute, long after the path works again.
CONNECT_TIMEOUT_S = 10.0


def is_transaction_pooler(database_url: str) -> bool:
    """True for Supabase's transaction pooler (port 6543), where LISTEN does not work."""
    return urlsplit(database_url).port == 6543


def connect_kwargs(database_url: str, application_name: str = "listener") -> dict[str, Any]:
    """asyncpg options for this URL (no statement cache behind a transaction pooler)."""
    kwargs: dict[str, Any] = {
        "dsn": database_url,
        "command_timeout": 30,
        "timeout": CONNECT_TIMEOUT_S,
        # Shown in pg_stat_activity, so operators can tell the listener's connections apart.
        "server_settings": {"application_name": application_name},
    }
    if is_transaction_pooler(database_url):
        kwargs["statement_cache_size"] = 0
    return kwargs


def _never_sent(exc: BaseException) -> bool:
    """True when asyncpg refused to start the statement: its connection was already broken."""
    return isinstance(exc, asyncpg.InternalClientError) and str(exc).startswith("cannot switch to state")


class ConnectionBudget:
    """How many connections the pool may hold: less than asked when the server refuses more.

    A connection refused (too many for the role, a pooler's pool full) lowers the budget to
    the connections that work, and callers queue for those instead of asking the server
    again; the budget grows back by one every GROW_AFTER_S. Giving back never waits, so
    that a caller cancelled on its way out still gives back what it took.
    """

    GROW_AFTER_S = 30.0

    def __init__(self, most: int) -> None:
        self.most = most
        self.allowed = most
        self.in_use = 0
        self._grow_at = 0.0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def _room(self) -> bool:
        now = asyncio.get_running_loop().time()
        if self.allowed < self.most and now >= self._grow_at:
            self.allowed += 1
            self._grow_at = now + self.GROW_AFTER_S
        return self.in_use < self.allowed

    async def take(self) -> None:
        """Waits for room in the budget, in turn, and takes one connection's worth."""
        if not self._waiters and self._room():
            self.in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._hand_over()  # those ahead in line may have been cancelled
        try:
            # Handed a connection's worth by `_hand_over`: when one is given back, or when the
            # budget grows back by itself (looked at when the growth is due).
            while not waiter.done():
                await asyncio.wait([waiter], timeout=self._grows_in())
                self._hand_over()
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed one as it was cancelled: it goes to the next in line
            else:
                waiter.cancel()  # skipped when its turn comes
            raise

    def give_back(self, *, refused: bool = False) -> bool:
        """Gives one back; after a refusal, shrinks to what works. False when nothing works."""
        self.in_use -= 1
        works = not refused or self.in_use > 0
        if refused and works:
            self.allowed = self.in_use
            self._grow_at = asyncio.get_running_loop().time() + self.GROW_AFTER_S
            log.warning("database_connections_refused", extra={"connections_that_work": self.allowed})
        self._hand_over()
        return works

    def _hand_over(self) -> None:
        """Hands the room there is to the first callers in line, one connection's worth each."""
        # One waiter woken per connection free, never all of them: with thousands of rows
        # waiting for a connection, waking every one for each connection given back made the
        # cost of a statement grow with the rows in flight.
        while self._waiters and self._room():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)

    def _grows_in(self) -> float | None:
        """Seconds until the budget may grow back by one; None when it is whole."""
        if self.allowed >= self.most:
            return None
        return max(0.0, self._grow_at - asyncio.get_running_loop().time())


class PgPool:
    """A pool that runs the named statements of queries.sql, its errors mapped to the project's."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        max_size: int = 10,
        opened: weakref.WeakSet[asyncpg.Connection] | None = None,
    ) -> None:
        self.pool = pool
        self.budget = ConnectionBudget(max_size)
        # The connections the pool opened and still holds, in use or idle.
        self.opened: weakref.WeakSet[asyncpg.Connection] = opened if opened is not None else weakref.WeakSet()

    @classmethod
    @asynccontextmanager
    async def connect(cls, database_url: str, *, max_size: int = 10) -> AsyncIterator[PgPool]:
        """Opens a pool for the duration of the block."""
        opened: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()

        async def remember(conn: asyncpg.Connection) -> None:
            opened.add(conn)

        try:
            pool = await asyncpg.create_pool(
                min_size=0, max_size=max_size, init=remember, **connect_kwargs(database_url)
            )
        except _REFUSALS as exc:
            raise DatabaseUnavailable(f"cannot connect to the database: {type(exc).__name__}") from exc
        try:
            yield cls(pool, max_size, opened)
        finally:
            await pool.close()

    def drop_connections(self) -> int:
        """Ends every connection of the pool at once, in use or idle; returns how many it ended."""
        # For a link gone silent (a half-open connection): the statements waiting on it fail
        # now, as DatabaseUnavailable, instead of after the command timeout; the next connect anew.
        dropped = [conn for conn in list(self.opened) if not conn.is_closed()]
        for conn in dropped:
            conn.terminate()
        if dropped:
            log.warning("database_connections_dropped", extra={"count": len(dropped)})
        return len(dropped)

    async def _run(self, work: Callable[[PooledConnection], Awaitable[T]]) -> T:
        # A connection the server ended while it sat idle in the pool (a restart, a terminated
        # backend) still looks open until its close arrives after the server's goodbye; asyncpg
        # then refuses to start a statement on it, before sending anything. Such a statement is
        # sent on another connection; the refused one is closed, never handed out again.
        tries = self.budget.most + 1
        for attempt in range(1, tries + 1):
            conn = await self._acquire()
            try:
                return await work(conn)
            except _CONNECTION_ERRORS as exc:
                if attempt < tries and _never_sent(exc):
                    log.info("database_connection_found_ended", extra={"error": str(exc)})
                    continue
                raise DatabaseUnavailable(f"database call failed: {type(exc).__name__}: {exc}") from exc
            finally:
                try:
                    await self._release(conn)
                finally:
                    self.budget.give_back()
        raise AssertionError("unreachable: the last try returns or raises")

    async def _release(self, conn: PooledConnection) -> None:
        """Hands the connection back; one that cannot be reset is closed by the pool, never reused."""
        # The statement's own outcome stands: a connection lost after it answered does not turn
        # its answer into an error.
        try:
            await self.pool.release(conn)
        except _REFUSALS as exc:
            log.info("database_connection_dropped", extra={"error": f"{type(exc).__name__}: {exc}"})

    async def _acquire(self) -> PooledConnection:
        """A connection of the pool; a refused one means waiting for one that works."""
        while True:
            await self.budget.take()
            try:
                return await self.pool.acquire()
            except _REFUSALS as exc:
                # Any refusal to connect means the database is unavailable for now, whatever its
                # code: too many connections, a pooler's "max clients reached" (XX000), a restart.
                if not self.budget.give_back(refused=True):
                    raise DatabaseUnavailable(
                        f"cannot get a database connection: {type(exc).__name__}: {exc}"
                    ) from exc
            except BaseException:  # cancelled while connecting: what was taken is given back
                self.budget.give_back()
                raise

    async def fetch(self, name: str, *args: object) -> list[asyncpg.Record]:
        """Every row the statement `name` returns."""
        return await self._run(lambda conn: conn.fetch(query(name), *args))

    async def fetchval(self, name: str, *args: object) -> object:
        """The first column of the first row the statement `name` returns, or None."""
        return await self._run(lambda conn: conn.fetchval(query(name), *args))

    async def fetchrow(self, name: str, *args: object) -> asyncpg.Record | None:
        """The first row the statement `name` returns, or None."""
        return await self._run(lambda conn: conn.fetchrow(query(name), *args))

    async def execute(self, name: str, *args: object) -> None:
        """Runs the statement `name` for its effect."""
        await self._run(lambda conn: conn.execute(query(name), *args))

    async def fetch_block(
        self, sql: str, *args: object, limit_s: float | None = None
    ) -> list[asyncpg.Record]:
        """Every row of `sql`, a named block of another SQL file (the dashboard's), errors mapped alike."""
        return await self._run(lambda conn: conn.fetch(sql, *args, timeout=limit_s))

    async def ping(self) -> None:
        """Raises DatabaseUnavailable unless a trivial statement succeeds."""
        await self.fetchrow("ping")

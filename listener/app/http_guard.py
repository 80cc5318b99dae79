"""The health port's guard: a deadline for each request's headers, and a cap on connections no one can hold.

Without it, anyone who reaches the port can open connections, send half a request line and
wait: aiohttp waits with them, each holds a descriptor, and once the process has none left
`/healthz` stops answering. The guard closes a connection that has not sent its request
headers within REQUEST_WAIT_S of connecting or of its last answer, and keeps the port's
connections under a cap taken from the descriptor limit, so that accepting never fails.
At the cap, a new connection is made room for by closing the connection that has waited
longest for its request: holding the cap with idle connections only gets the holder's own
connections closed. A connection being answered is never closed: what answers at length bounds
itself (the dashboard's event streams in number, its sign-in form's body in time).
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

# Probes, Prometheus and browsers send a request's headers in one go, within milliseconds; a
# connection still without them this long after connecting or after its last answer is idle or
# hostile. It is also the keep-alive time: browsers and Prometheus reconnect by themselves.
REQUEST_WAIT_S = 5.0
# Probes, scrapes and a few dashboard pages need tens of connections; this is many times that.
MAX_CONNECTIONS = 1024
# asyncio accepts up to the backlog's length of connections per turn of its loop, and a new
# connection needs a few turns before its request is read: under a flood of new connections, a
# probe lasts those turns only if many times that many fit under the cap. aiohttp's 128 let a
# flood of 2,500 connections a second close nearly every probe of /healthz at a cap of 256;
# with 16 they were all answered. A full backlog only delays a connection (the client's
# handshake is retried), and a health port has few clients.
BACKLOG = 16
MIN_CONNECTIONS = 16
# What `resource` reports as no limit is taken as this many descriptors.
_UNLIMITED = 1 << 20


def descriptor_limit() -> int:
    """The process's soft limit on open descriptors (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _UNLIMITED if soft == resource.RLIM_INFINITY else soft


def connection_cap(descriptors: int) -> int:
    """Most connections the port keeps open, leaving half the descriptors to the rest of the listener."""
    # A turn of the loop accepts up to BACKLOG sockets before the guard sees them, and a connection
    # closed to make room gives its descriptor back a turn later: room is kept for both.
    return max(MIN_CONNECTIONS, min(MAX_CONNECTIONS, descriptors // 2 - 2 * BACKLOG))


class _Refused(asyncio.Protocol):
    """A connection accepted at the cap when every open one is being answered: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Connection(web.RequestHandler):
    """aiohttp's handler of one connection, telling the guard when it opens and closes."""

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.guard._now_waiting(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.guard._gone(self)
        super().connection_lost(exc)


class ConnectionGuard:
    """Makes the health server's connections and tracks whether each waits for a request or is answered."""

    def __init__(self, max_connections: int, request_wait_s: float = REQUEST_WAIT_S) -> None:
        self.max_connections = max_connections
        self.request_wait_s = request_wait_s
        self._open: set[_Connection] = set()  # from accept until closed: each holds a descriptor
        self._closing: set[_Connection] = set()  # closed by the guard, their descriptors freed next turn
        # Connections waiting for a request, longest waiting first, with the timer that closes them.
        self._waiting: dict[_Connection, asyncio.TimerHandle] = {}

    @property
    def open_connections(self) -> int:
        """Connections open and not being closed."""
        return len(self._open) - len(self._closing)

    def protocol_factory(self, server: web.Server, **handler_args: Any) -> Callable[[], asyncio.Protocol]:
        """What `loop.create_server` calls per accepted socket; `handler_args` go to aiohttp's handler."""
        loop = asyncio.get_running_loop()

        def accept() -> asyncio.Protocol:
            if self.open_connections >= self.max_connections and not self._close_longest_waiting():
                return _Refused()
            connection = _Connection(self, server, loop=loop, **handler_args)
            self._open.add(connection)
            return connection

        return accept

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection as answered while the handler runs: it is not timed nor closed for room."""
        connection = request.protocol
        if not isinstance(connection, _Connection):
            return await handler(request)
        self._stop_waiting(connection)
        try:
            return await handler(request)
        finally:
            # The answer is written after this; the next request's timer covers a reader too slow for it.
            if connection in self._open and connection not in self._closing:
                self._now_waiting(connection)

    def _now_waiting(self, connection: _Connection) -> None:
        self._stop_waiting(connection)
        loop = asyncio.get_running_loop()
        self._waiting[connection] = loop.call_later(self.request_wait_s, self._close, connection)

    def _stop_waiting(self, connection: _Connection) -> None:
        timer = self._waiting.pop(connection, None)
        if timer is not None:
            timer.cancel()

    def _close_longest_waiting(self) -> bool:
        for connection in self._waiting:
            self._close(connection)
            return True
        return False

    def _close(self, connection: _Connection) -> None:
        self._stop_waiting(connection)
        self._closing.add(connection)
        connection.force_close()

    def _gone(self, connection: _Connection) -> None:
        self._stop_waiting(connection)
        self._open.discard(connection)
        self._closing.discard(connection)

"""A TCP proxy on loopback between a client and Postgres whose link can fail in two ways.

`stall()`: the link goes silent without closing anything (a half-open link): nothing is
forwarded, on the connections it carries and on new ones alike, and none is closed; each end
sees a connection that is open and never answers, as when a network path or a peer vanishes
without a word. Connections caught by a stall stay silent for good (their peer is gone); once
`resume()` is called, new connections are forwarded again.

`cut()`: the database as if down: every connection is closed at once and new ones are closed
as they arrive, until `heal()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    handler: asyncio.Task[None] | None = None
    silent: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class LinkProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port` until told to stall."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.stalled = False
        self.is_cut = False
        self.connections = 0
        self.silenced = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._closing = asyncio.Event()  # silent connections hold on until the proxy stops

    async def start(self) -> None:
        """Listens on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self) -> None:
        """Forwards nothing from now on, closing nothing; new connections are held silent too."""
        self.stalled = True
        for link in self._links:
            self._silence(link)

    def resume(self) -> None:
        """New connections are forwarded again; those caught by the stall stay silent."""
        self.stalled = False

    def cut(self) -> None:
        """Closes every connection, and each new one as it arrives, until `heal()`."""
        self.is_cut = True
        for link in list(self._links):
            self._close(link)

    def heal(self) -> None:
        """New connections are forwarded again."""
        self.is_cut = False

    async def stop(self) -> None:
        """Stops listening and closes every connection, silent ones included."""
        self._closing.set()
        if self._server is not None:
            self._server.close()
        links = list(self._links)
        for link in links:
            self._close(link)
        tasks = [task for link in links for task in (*link.tasks, link.handler) if task is not None]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
        self._links.clear()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        """Copies until either end closes; a silenced link swallows what it reads and closes nothing."""
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if link.silent:
                    continue
                writer.write(chunk)
                await writer.drain()
        if link.silent:
            await self._closing.wait()  # a half-open link never tells the other end it ended
        writer.close()

    def _silence(self, link: _Link) -> None:
        if not link.silent:
            link.silent = True
            self.silenced += 1

    def _close(self, link: _Link) -> None:
        for writer in (link.client, link.upstream):
            if writer is not None:
                writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer, handler=asyncio.current_task())
        self._links.add(link)
        try:
            if self.is_cut:
                return
            if self.stalled:
                self._silence(link)
                await _drain(reader)
                await self._closing.wait()
                return
            upstream_reader, link.upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            link.tasks = [
                asyncio.create_task(self._pipe(reader, link.upstream, link)),
                asyncio.create_task(self._pipe(upstream_reader, writer, link)),
            ]
            await asyncio.gather(*link.tasks, return_exceptions=True)
        except OSError:
            pass
        finally:
            self._close(link)
            self._links.discard(link)


async def _drain(reader: asyncio.StreamReader) -> None:
    """Reads and drops until the other end closes."""
    with contextlib.suppress(OSError):
        while await reader.read(65536):
            pass

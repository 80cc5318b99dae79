"""A session-mode pooler stand-in: passes the first N clients through to Postgres, refuses the rest.

A refused client gets what Supavisor's session mode sends when its pool is full: a FATAL
error with SQLSTATE XX000 and "(EMAXCONNSESSION) max clients reached in session mode".
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

SSL_REQUEST = 80877103
MAX_CLIENTS = "(EMAXCONNSESSION) max clients reached in session mode - max clients are limited to pool_size"


def error_response(sqlstate: str, message: str) -> bytes:
    """A Postgres ErrorResponse message, severity FATAL."""
    fields = b"".join(
        kind + value.encode() + b"\x00"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\x00"
    return b"E" + struct.pack("!I", len(body) + 4) + body


class SessionPooler:
    """Listens on loopback; at most `max_clients` connections at once reach Postgres."""

    def __init__(self, upstream_port: int, max_clients: int) -> None:
        self.upstream_port = upstream_port
        self.max_clients = max_clients
        self.clients = 0
        self.refused = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= self.max_clients:
            self.refused += 1
            await self._refuse(reader, writer)
            return
        self.clients += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(
                _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
            )
        finally:
            self.clients -= 1
            writer.close()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            length, code = struct.unpack("!II", await reader.readexactly(8))
            if code == SSL_REQUEST:
                writer.write(b"N")  # no TLS here; the client goes on in plain text
                await writer.drain()
                (length,) = struct.unpack("!I", await reader.readexactly(4))
                await reader.readexactly(length - 4)
            else:
                await reader.readexactly(length - 8)
            writer.write(error_response("XX000", MAX_CLIENTS))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        writer.close()

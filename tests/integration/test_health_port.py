"""The health port under connections that never finish a request: it keeps answering `/healthz`.

Real sockets on 127.0.0.1 against the real HealthServer, in this process or (where the
process's descriptor limit matters) in a process of its own with a lowered RLIMIT_NOFILE.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from listener.app.dashboard.routes import MAX_STREAMS, Dashboard
from listener.app.health import HealthServer
from listener.app.http_guard import ConnectionGuard
from listener.metrics import Metrics
from listener.playground.embedded import free_port
from tests.support.health_port import (
    DASHBOARD_TOKEN,
    HALF_A_REQUEST_LINE,
    StillReads,
    health_port_process,
    healthz_status,
    open_idle_load,
    raise_own_descriptor_limit,
)

BEARER = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}
# Generous bounds on how long the server may take to do what it must: a test fails only when it never does.
CLOSED_WITHIN_S = 30.0
IDLE_LOAD = 2000
# The descriptor limit of many containers and login shells; 2,000 connections overran it.
SERVER_NOFILE = 1024


async def _ready() -> str | None:
    return None


@contextlib.asynccontextmanager
async def health_server(guard: ConnectionGuard | None = None) -> AsyncIterator[HealthServer]:
    """The health server with the dashboard on 127.0.0.1, over reads of a database where nothing happens."""
    dashboard = Dashboard(DASHBOARD_TOKEN, StillReads())  # type: ignore[arg-type]
    server = HealthServer("127.0.0.1", free_port(), Metrics(), _ready, on_app=dashboard.install, guard=guard)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes the connection (within CLOSED_WITHIN_S); False if it never does."""
    try:
        async with asyncio.timeout(CLOSED_WITHIN_S):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def test_a_connection_that_does_not_send_its_request_is_closed() -> None:
    """Half a request line, a request sent a byte at a time, and a keep-alive connection left idle."""
    async with health_server() as server:
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", server.port)
        silent_w.write(HALF_A_REQUEST_LINE)

        drip_r, drip_w = await asyncio.open_connection("127.0.0.1", server.port)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"

        async def drip() -> bool:
            """Sends the request a byte every half second; True if it all went out."""
            with contextlib.suppress(OSError):
                for byte in request:
                    drip_w.write(bytes([byte]))
                    await drip_w.drain()
                    await asyncio.sleep(0.5)
                    if drip_r.at_eof():
                        return False
                return True
            return False

        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", server.port)
        idle_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(idle_r.readuntil(b'{"status": "ok"}'), 10)

        dripping = asyncio.create_task(drip())
        closed = await asyncio.gather(
            closed_by_server(silent_r), closed_by_server(drip_r), closed_by_server(idle_r)
        )
        try:
            finished_dripping = await asyncio.wait_for(dripping, CLOSED_WITHIN_S)
        except TimeoutError:
            finished_dripping = True  # still sending, the connection still open
        for writer in (silent_w, drip_w, idle_w):
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert list(closed) == [True, True, True]
    assert not finished_dripping  # the timer runs from connecting, not from the last byte received


async def test_at_the_cap_the_longest_waiting_connection_makes_room_and_answers_in_progress_go_on() -> None:
    """A plain cap would let whoever holds it starve /healthz: instead the oldest idle connection goes."""
    guard = ConnectionGuard(max_connections=6, request_wait_s=120)
    async with (
        health_server(guard) as server,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/api/events", headers=BEARER) as stream,
    ):
        assert stream.status == 200
        await asyncio.wait_for(stream.content.readuntil(b"event: live"), 10)
        idle = []
        for _ in range(6):  # with the stream, one more than the cap
            idle.append(await asyncio.open_connection("127.0.0.1", server.port))
            idle[-1][1].write(HALF_A_REQUEST_LINE)
            await asyncio.sleep(0.05)  # each is accepted in turn: "oldest" is well defined
        status = await healthz_status(server.port)
        first_two_closed = [await closed_by_server(reader) for reader, _ in idle[:2]]
        others_open = [not reader.at_eof() for reader, _ in idle[2:]]
        # The stream, the oldest connection of all, is being answered: it still streams.
        await asyncio.wait_for(stream.content.readuntil(b"event: live"), 30)
        for _, writer in idle:
            writer.close()
    assert status == 200
    assert first_two_closed == [True, True]
    assert all(others_open)


async def test_event_streams_beyond_their_cap_are_answered_503_and_a_closed_one_frees_its_place() -> None:
    async with health_server() as server, contextlib.AsyncExitStack() as streams:
        http = await streams.enter_async_context(aiohttp.ClientSession())
        url = f"http://127.0.0.1:{server.port}/api/events"
        opened = [
            await streams.enter_async_context(http.get(url, headers=BEARER)) for _ in range(MAX_STREAMS)
        ]
        for response in opened:
            await asyncio.wait_for(response.content.readuntil(b"event: live"), 10)
        async with http.get(url, headers=BEARER) as beyond:
            beyond_status = beyond.status
            beyond_body = await beyond.json() if beyond_status == 503 else {}  # a stream never ends
        healthz = await healthz_status(server.port)
        opened[0].close()
        again_status = 503
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSED_WITHIN_S):
                while again_status == 503:  # the stream sees its watcher gone at its next tick
                    await asyncio.sleep(0.2)
                    async with http.get(url, headers=BEARER) as again:
                        again_status = again.status
    assert [response.status for response in opened] == [200] * MAX_STREAMS
    assert beyond_status == 503 and "polls" in beyond_body["error"]
    assert healthz == 200
    assert again_status == 200


async def test_a_sign_in_form_that_never_arrives_is_answered_408() -> None:
    """The connection is being answered, so only the handler can bound the wait for its body."""
    async with health_server() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /dashboard/sign-in HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ntoken=abc"
        )
        try:
            status_line = await asyncio.wait_for(reader.readline(), CLOSED_WITHIN_S)
        except TimeoutError:
            status_line = b"no answer"
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 408")


@pytest.fixture
def many_descriptors() -> None:
    """This process needs a descriptor per connection of the load, beside its own."""
    if raise_own_descriptor_limit(4 * IDLE_LOAD) < IDLE_LOAD + 500:
        pytest.skip(f"the hard RLIMIT_NOFILE ({resource.getrlimit(resource.RLIMIT_NOFILE)[1]}) is too low")


@pytest.mark.usefixtures("many_descriptors")
async def test_healthz_answers_while_2000_idle_connections_are_held(tmp_path: Path) -> None:
    """2,000 connections that each sent half a request line, against a port allowed 1,024 descriptors."""
    async with health_port_process(free_port(), SERVER_NOFILE, tmp_path / "server.log") as port:
        load = await open_idle_load(port.port, IDLE_LOAD)
        try:
            statuses = [await healthz_status(port.port) for _ in range(3)]
            await load.wait_until_all_closed(CLOSED_WITHIN_S)
            closed = load.closed_by_server()
        finally:
            await load.close()
        log = port.log()
    assert statuses == [200, 200, 200]
    assert load.failed == 0
    assert closed == IDLE_LOAD  # room made for newer ones, or their time to send a request ran out
    assert "out of system resource" not in log  # accepting never ran out of descriptors


async def test_accepting_without_descriptors_is_logged_once_a_minute(tmp_path: Path) -> None:
    """asyncio says it again every second it retries; the log keeps the first of the minute."""
    async with health_port_process(free_port(), 256, tmp_path / "server.log", hog=True) as port:
        load = await open_idle_load(port.port, 20, connect_s=1)  # they wait in the backlog
        try:
            async with asyncio.timeout(CLOSED_WITHIN_S):
                while True:
                    if "out of system resource" in port.log():
                        break
                    await asyncio.sleep(0.2)
            await asyncio.sleep(4)  # several more retries of asyncio's, one a second
        finally:
            await load.close()
        log = port.log()
    assert log.count("out of system resource") == 1, log
    assert '"suppressed": 0' in log

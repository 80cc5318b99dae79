"""Benchmark: how long `/healthz` takes while connections that never finish a request hold the port.

    python -m tests.benchmarks.health_port
    python -m tests.benchmarks.health_port --connections 2000 --nofile 1024 --churn-s 20

The real HealthServer runs in a process of its own with RLIMIT_NOFILE lowered to `--nofile`
(the dashboard on, over a stand-in for its reads). Three phases, `--probes` GETs of
/healthz each, one at a time on a new connection:

- `quiet`: nothing else on the port;
- `held`: after `--connections` connections each sent half a request line and then nothing;
- `churn`: for `--churn-s` seconds, each of those connections is opened again as soon as the
  server closes it (a flood that keeps the port at its cap), probes every 0.1 s.

Prints, per phase, the probes answered 200 and the others, and the latency of the answered
ones (p50, p95, max, ms); for `held`, how long opening the load took and how many of its
connections the server had closed by the first probe and in the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from listener.app.http_guard import connection_cap
from listener.playground.embedded import free_port
from tests.support.health_port import (
    HALF_A_REQUEST_LINE,
    health_port_process,
    healthz_status,
    open_idle_load,
    raise_own_descriptor_limit,
)


async def probe(port: int) -> tuple[int | str, float]:
    """One /healthz: its status (or error) and how long it took, in ms."""
    started = time.perf_counter()
    status = await healthz_status(port)
    return status, (time.perf_counter() - started) * 1000


def summary(results: list[tuple[int | str, float]]) -> dict[str, Any]:
    """Answered and failed probes, and the latency of the answered ones."""
    answered = sorted(ms for status, ms in results if status == 200)
    failed = [str(status) for status, _ in results if status != 200]
    figures: dict[str, Any] = {"answered": len(answered), "failed": len(failed)}
    if failed:
        figures["failures"] = sorted(set(failed))
    if answered:
        figures["p50_ms"] = round(statistics.median(answered), 2)
        figures["p95_ms"] = round(answered[min(len(answered) - 1, int(0.95 * len(answered)))], 2)
        figures["max_ms"] = round(answered[-1], 2)
    return figures


async def flood(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """One attacker: a connection with half a request line, opened again each time the server closes it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        except (OSError, TimeoutError):
            continue
        opened[0] += 1
        try:
            writer.write(HALF_A_REQUEST_LINE)
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(30):  # the server closes it within its request wait
                    await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def bench(connections: int, nofile: int, probes: int, churn_s: float) -> dict[str, Any]:
    """Runs the three phases against one health port process."""
    raise_own_descriptor_limit(4 * connections)
    with tempfile.TemporaryDirectory() as folder:
        async with health_port_process(free_port(), nofile, Path(folder) / "server.log") as server:
            quiet = [await probe(server.port) for _ in range(probes)]

            started = time.perf_counter()
            load = await open_idle_load(server.port, connections)
            opening_s = time.perf_counter() - started
            closed_at_first_probe = load.closed_by_server()
            held = [await probe(server.port) for _ in range(probes)]
            await load.wait_until_all_closed(30)
            closed_in_the_end = load.closed_by_server()
            await load.close()

            stop, opened = asyncio.Event(), [0]
            attackers = [asyncio.create_task(flood(server.port, stop, opened)) for _ in range(connections)]
            churn: list[tuple[int | str, float]] = []
            deadline = time.monotonic() + churn_s
            while time.monotonic() < deadline:
                churn.append(await probe(server.port))
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*attackers)
            accept_errors = server.log().count("out of system resource")
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "server_nofile": nofile,
        "connection_cap": connection_cap(nofile),
        "connections": connections,
        "quiet": summary(quiet),
        "held": {
            **summary(held),
            "opening_s": round(opening_s, 2),
            "failed_to_open": load.failed,
            "closed_by_server_at_first_probe": closed_at_first_probe,
            "closed_by_server_in_the_end": closed_in_the_end,
        },
        "churn": {**summary(churn), "seconds": churn_s, "connections_opened": opened[0]},
        "accept_errors_logged": accept_errors,
    }


def main() -> None:
    """Prints the figures as JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=2000, help="idle connections of the load")
    parser.add_argument("--nofile", type=int, default=1024, help="the server's RLIMIT_NOFILE")
    parser.add_argument("--probes", type=int, default=20, help="GET /healthz per quiet and held phase")
    parser.add_argument("--churn-s", type=float, default=20.0, help="seconds of the churn phase")
    args = parser.parse_args()
    figures = asyncio.run(bench(args.connections, args.nofile, args.probes, args.churn_s))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

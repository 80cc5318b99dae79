"""What the listener is measured against, each in a process of its own as `listener run` is.

    python -m tests.benchmarks.peers floor DSN                      # the bare LISTEN client
    python -m tests.benchmarks.peers procrastinate DSN CONCURRENCY   # a procrastinate worker

The floor: a bare asyncpg client LISTENing on `listener_jobs` (the listener's own trigger
and channel). For each notification it sets `listener.jobs.claimed_at = clock_timestamp()`
of the row it names, through a pool of as many connections as the listener's. So the floor
and the listener are read by one query, `claimed_at - enqueued_at`, both on the server's
clock: the time from the insert to one statement sent by a client that heard it. The
listener adds only what its claim does beyond that statement.

procrastinate: an App with one no-op task, whose schema lives beside the listener's in the
same database (its objects are all named `procrastinate_*`). Jobs are deferred from the
benchmark's process; the worker runs here. Its insert-to-start latency is read from its own
events table, `procrastinate_events`: `at` of the job's `started` event minus `at` of its
`deferred` event. Both are `now()` of their transaction on the server: the defer's
statement, and the fetch that moves the job to `doing`. The fetch's `now()` is the start
of that statement, where the listener's `claimed_at` is taken while its claim runs, so
this favours procrastinate by the length of one fetch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import procrastinate

# The floor's writes go through as many connections as a replica's pool has by default.
FLOOR_POOL_SIZE = 5
FLOOR_READY_LINE = "ready"
NOOP_TASK = "noop"
# The worker's connections carry this name in pg_stat_activity, for the readiness check.
PROCRASTINATE_APPLICATION_NAME = "procrastinate-bench"

_RECORD_HEARD = "UPDATE listener.jobs SET claimed_at = clock_timestamp() WHERE model_id = $1"


async def noop() -> None:
    """The task procrastinate runs: nothing, so that only getting to it is measured."""


def procrastinate_app(dsn: str) -> procrastinate.App:
    """A procrastinate App on `dsn` with the no-op task registered (not yet opened)."""
    separator = "&" if "?" in dsn else "?"
    conninfo = f"{dsn}{separator}application_name={PROCRASTINATE_APPLICATION_NAME}"
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    app.task(name=NOOP_TASK)(noop)
    return app


async def apply_procrastinate_schema(dsn: str) -> None:
    """Creates procrastinate's tables, types and triggers in the database of `dsn`."""
    async with procrastinate_app(dsn).open_async() as app:
        await app.schema_manager.apply_schema_async()


async def procrastinate_latencies_ms(
    conn: asyncpg.Connection, job_ids: Sequence[int]
) -> dict[int, float | None]:
    """Each job's time from `deferred` to `started` on the server's clock; None when not started."""
    rows = await conn.fetch(
        "SELECT d.job_id, extract(epoch FROM s.at - d.at)::float8 * 1000 AS ms "
        "FROM procrastinate_events d "
        "LEFT JOIN procrastinate_events s ON s.job_id = d.job_id AND s.type = 'started' "
        "WHERE d.type = 'deferred' AND d.job_id = ANY($1::bigint[])",
        list(job_ids),
    )
    found: dict[int, float | None] = {job_id: None for job_id in job_ids}
    found.update({row["job_id"]: row["ms"] for row in rows})
    return found


async def procrastinate_started(conn: asyncpg.Connection, job_ids: Sequence[int]) -> int:
    """How many of `job_ids` procrastinate has started."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM procrastinate_events WHERE type = 'started' AND job_id = ANY($1::bigint[])",
        list(job_ids),
    )
    return count


async def wait_until_procrastinate_listens(conn: asyncpg.Connection, workers: int, timeout_s: float) -> None:
    """Waits until `workers` procrastinate workers have a LISTEN connection open."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listening = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN %'",
            PROCRASTINATE_APPLICATION_NAME,
        )
        if listening >= workers:
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"{workers} procrastinate worker(s) did not LISTEN within {timeout_s:g} s")


async def stop_process(process: asyncio.subprocess.Process, grace_s: float = 60.0) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within `grace_s`."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except TimeoutError:
        process.kill()
        await asyncio.wait_for(process.wait(), 10)


@asynccontextmanager
async def peer_process(args: Sequence[str], log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m tests.benchmarks.peers ARGS`, stdout piped, stderr to `log_path`; stopped at the end."""
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.benchmarks.peers", *args, stdout=asyncio.subprocess.PIPE, stderr=log
        )
        try:
            yield process
        finally:
            await stop_process(process)


@asynccontextmanager
async def floor_process(dsn: str, log_path: Path, timeout_s: float = 30.0) -> AsyncIterator[None]:
    """The bare LISTEN client in a process of its own, LISTENing when the block starts."""
    async with peer_process(["floor", dsn], log_path) as process:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
        except TimeoutError:
            line = b""
        if line.decode().strip() != FLOOR_READY_LINE:
            raise SystemExit(f"the bare LISTEN client was not ready within {timeout_s:g} s (see {log_path})")
        yield


@asynccontextmanager
async def procrastinate_workers(
    dsn: str, conn: asyncpg.Connection, workers: int, concurrency: int, log_dir: Path, timeout_s: float = 60.0
) -> AsyncIterator[None]:
    """`workers` procrastinate worker processes, each LISTENing when the block starts."""
    async with contextlib.AsyncExitStack() as stack:
        for n in range(workers):
            await stack.enter_async_context(
                peer_process(["procrastinate", dsn, str(concurrency)], log_dir / f"procrastinate-{n}.log")
            )
        await wait_until_procrastinate_listens(conn, workers, timeout_s)
        yield


async def run_floor(dsn: str) -> None:
    """The bare LISTEN client: records when it heard each job, until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    pool = await asyncpg.create_pool(dsn, min_size=FLOOR_POOL_SIZE, max_size=FLOOR_POOL_SIZE)
    listen = await asyncpg.connect(dsn)
    writes: set[asyncio.Task[str]] = set()

    def heard(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        write = asyncio.create_task(pool.execute(_RECORD_HEARD, uuid.UUID(str(payload))))
        writes.add(write)
        write.add_done_callback(writes.discard)

    await listen.add_listener("listener_jobs", heard)
    print(FLOOR_READY_LINE, flush=True)
    await stop.wait()
    await listen.close()
    if writes:
        await asyncio.wait(writes, timeout=10)
    await pool.close()


async def run_procrastinate_worker(dsn: str, concurrency: int) -> None:
    """A procrastinate worker with `concurrency` slots, until SIGTERM (it installs its own handlers)."""
    async with procrastinate_app(dsn).open_async() as app:
        await app.run_worker_async(concurrency=concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="peer", required=True)
    floor = commands.add_parser("floor", help="the bare LISTEN client")
    floor.add_argument("dsn")
    worker = commands.add_parser("procrastinate", help="a procrastinate worker")
    worker.add_argument("dsn")
    worker.add_argument("concurrency", type=int)
    args = parser.parse_args()
    # Through the module by its name, not __main__: procrastinate wants its App defined in an
    # importable module, as its worker would import it.
    from tests.benchmarks import peers

    if args.peer == "floor":
        asyncio.run(peers.run_floor(args.dsn))
    else:
        asyncio.run(peers.run_procrastinate_worker(args.dsn, args.concurrency))


if __name__ == "__main__":
    main()

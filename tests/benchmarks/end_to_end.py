"""Benchmark: N rows through a real `listener run` process; prints timings, writes per row, peak memory.

    python -m tests.benchmarks.end_to_end --rows 200 --duration 5 --repeat 3
    python -m tests.benchmarks.end_to_end --quick

Everything runs on this machine: an embedded Postgres, the AI simulator, a local S3.
The memory figure is the peak resident memory (VmHWM) of the `listener run` process
itself, read just before it is stopped. With `--repeat N` the runs are printed one by
one, each from a fresh database, and then the median, least and most of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from listener.adapters.postgres.migrate import migrate
from listener.playground.embedded import EmbeddedPostgres
from listener.playground.local_s3 import LocalS3
from listener.playground.simulator import AISimulator, SimulatorConfig
from tests.benchmarks.harness import (
    listener_env,
    listener_process,
    memory_mib,
    percentile,
    wait_until_ready,
    with_spread,
)


async def bench(
    rows: int, users: int, duration_s: float, poll_interval_s: float, concurrency: int
) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(prefix="listener-bench-") as tmp,
        EmbeddedPostgres() as pg,
        LocalS3() as s3,
    ):
        work = Path(tmp)
        conn = await asyncpg.connect(pg.dsn)
        simulator = AISimulator(
            SimulatorConfig(duration_s=duration_s, file_ttl_after_serve_s=1.0, keep_produced=False)
        )
        try:
            await migrate(conn)
            await simulator.start()
            env = listener_env(
                pg.dsn,
                simulator.base_url,
                work / "spool",
                s3.config(),
                LISTENER_POLL_INTERVAL=str(poll_interval_s),
                LISTENER_CONCURRENCY=str(concurrency),
                LISTENER_PER_USER_LIMIT=str(concurrency),
            )
            async with listener_process(env, work / "listener.log") as process:
                await wait_until_ready(env)
                wall_s, updates = await run_rows(conn, process, rows, users, duration_s)
                peak_mib = memory_mib(process.pid)["VmHWM"]
            timings = await conn.fetch(
                "SELECT extract(epoch FROM m.completed_at - m.created_at)::float8 AS end_to_end_s, "
                "extract(epoch FROM j.claimed_at - j.enqueued_at)::float8 * 1000 AS claim_ms "
                "FROM public.ai_generated_models m JOIN listener.jobs j ON j.model_id = m.id"
            )
        finally:
            await conn.close()
            await simulator.stop()
    e2e = [r["end_to_end_s"] for r in timings]
    claim = [r["claim_ms"] for r in timings]
    return {
        "rows": rows,
        "users": users,
        "simulated_generation_s": duration_s,
        "poll_interval_s": poll_interval_s,
        "wall_s_all_rows": round(wall_s, 2),
        "end_to_end_s_p50": round(statistics.median(e2e), 3),
        "end_to_end_s_p95": round(percentile(e2e, 0.95), 3),
        "end_to_end_s_max": round(max(e2e), 3),
        "insert_to_claim_ms_p50": round(statistics.median(claim), 2),
        "insert_to_claim_ms_p99": round(percentile(claim, 0.99), 2),
        "row_writes_per_row": round(updates / rows, 2),
        "ai_polls_per_row": round(sum(simulator.polls.values()) / rows, 1),
        "listener_peak_rss_mib": round(peak_mib, 1),
    }


async def run_rows(
    conn: asyncpg.Connection, process: asyncio.subprocess.Process, rows: int, users: int, duration_s: float
) -> tuple[float, int]:
    """Inserts the rows and waits until all are completed; returns the seconds that took and the
    row updates the table saw meanwhile."""
    updates_query = "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'ai_generated_models'"
    updates_before = await conn.fetchval(updates_query)
    owners = [uuid.uuid4() for _ in range(users)]
    started = time.monotonic()
    for n in range(rows):
        await conn.execute(
            "INSERT INTO public.ai_generated_models "
            "(user_id, generation_type, prompt, model_name, storage_path, status) "
            "VALUES ($1, 'text_to_3d', $2, $3, '', 'pending')",
            owners[n % users],
            f"benchmark model {n}",
            f"Model {n}",
        )
    deadline = time.monotonic() + duration_s * 4 + 120
    while (
        await conn.fetchval("SELECT count(*) FROM public.ai_generated_models WHERE status = 'completed'")
        < rows
    ):
        if time.monotonic() > deadline or process.returncode is not None:
            raise SystemExit("benchmark rows did not complete in time")
        await asyncio.sleep(0.1)
    wall_s = time.monotonic() - started
    await asyncio.sleep(0.7)  # the statistics collector catches up
    updates: int = await conn.fetchval(updates_query) - updates_before
    return wall_s, updates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=float, default=5.0, help="simulated generation time, seconds")
    parser.add_argument("--poll-interval", type=float, default=0.25)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1, help="runs, each from a fresh database")
    parser.add_argument("--quick", action="store_true", help="50 rows of 2 s: for CI, well under a minute")
    args = parser.parse_args()
    rows, duration_s = (50, 2.0) if args.quick else (args.rows, args.duration)
    runs = [
        asyncio.run(bench(rows, args.users, duration_s, args.poll_interval, args.concurrency))
        for _ in range(args.repeat)
    ]
    print(json.dumps(with_spread(runs), indent=2))


if __name__ == "__main__":
    main()

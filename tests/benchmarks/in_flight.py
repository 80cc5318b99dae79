"""Benchmark: many generations in flight in one `listener run` process.

    python -m tests.benchmarks.in_flight --rows 10000 --poll-interval 5
    python -m tests.benchmarks.in_flight --quick

Inserts `--rows` requests whose simulated generation outlasts the run, waits until all
are claimed and have been polled a few times, then prints the listener's memory per row
in flight and how late its polls started (from its /metrics histogram). The AI simulator
runs in a process of its own, so that it does not share the listener's CPU; Storage is a
local S3, so that the listener is ready (/readyz answers 200) before the rows arrive. The
idle memory is read once it is ready. `--repeat N` runs it N times, each from a fresh
database, and adds the median, least and most of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from listener.adapters.postgres.migrate import migrate
from listener.playground.embedded import EmbeddedPostgres
from listener.playground.local_s3 import LocalS3
from tests.benchmarks.harness import (
    listener_env,
    listener_process,
    memory_mib,
    simulator_process,
    wait_until_ready,
    with_spread,
)


def lateness_quantile(text: str, q: float) -> float:
    """The upper bound of the histogram bucket holding quantile `q` of poll lateness."""
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        if family.name == "listener_poll_lateness_seconds":
            buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name.endswith("_bucket")]
    total = buckets[-1][1]
    for bound, count in buckets:
        if count >= q * total:
            return bound
    return float("inf")


async def bench(rows: int, poll_interval_s: float, settle_polls: int) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory(prefix="listener-inflight-bench-") as tmp,
        EmbeddedPostgres() as pg,
        LocalS3() as s3,
    ):
        conn = await asyncpg.connect(pg.dsn)
        try:
            await migrate(conn)
            async with simulator_process(duration_s=3600, keep_produced=False) as ai_url:
                env = listener_env(
                    pg.dsn,
                    ai_url,
                    Path(tmp) / "spool",
                    s3.config(),
                    LISTENER_POLL_INTERVAL=str(poll_interval_s),
                    LISTENER_CONCURRENCY=str(rows),
                    LISTENER_PER_USER_LIMIT=str(rows),
                )
                async with listener_process(env, Path(tmp) / "listener.log") as process:
                    await wait_until_ready(env)
                    metrics_url = f"http://127.0.0.1:{env['LISTENER_HTTP_PORT']}/metrics"
                    return await measure(conn, process.pid, rows, poll_interval_s, settle_polls, metrics_url)
        finally:
            await conn.close()


async def measure(
    conn: asyncpg.Connection, pid: int, rows: int, poll_interval_s: float, settle_polls: int, metrics_url: str
) -> dict[str, object]:
    """Inserts the rows, waits until all are in flight and polled, and reads the figures."""
    idle_mib = memory_mib(pid)["VmRSS"]
    await conn.execute(
        "INSERT INTO public.ai_generated_models "
        "(user_id, generation_type, prompt, model_name, storage_path, status) "
        "SELECT gen_random_uuid(), 'text_to_3d', 'model ' || n, 'Bench', '', 'pending' "
        "FROM generate_series(1, $1) n",
        rows,
    )
    started = time.monotonic()
    deadline = started + 600
    while await conn.fetchval(
        "SELECT count(*) FROM listener.jobs WHERE ai_task_id IS NULL AND finished_at IS NULL"
    ):
        if time.monotonic() > deadline:
            raise SystemExit("rows were not all submitted in time")
        await asyncio.sleep(0.5)
    all_submitted_s = time.monotonic() - started
    await asyncio.sleep(poll_interval_s * settle_polls)  # every row polled several times
    busy_mib = memory_mib(pid)["VmRSS"]
    async with aiohttp.ClientSession() as http, http.get(metrics_url) as r:
        metrics = await r.text()
    in_flight = await conn.fetchval(
        "SELECT count(*) FROM public.ai_generated_models WHERE status = 'processing'"
    )
    failed = await conn.fetchval("SELECT count(*) FROM public.ai_generated_models WHERE status = 'failed'")
    return {
        "rows_in_flight": in_flight,
        "rows_failed": failed,
        "poll_interval_s": poll_interval_s,
        "seconds_to_claim_and_submit_all": round(all_submitted_s, 1),
        "listener_rss_idle_mib": round(idle_mib, 1),
        "listener_rss_in_flight_mib": round(busy_mib, 1),
        "kib_per_row_in_flight": round((busy_mib - idle_mib) * 1024 / rows, 1),
        "poll_lateness_p50_s_at_most": lateness_quantile(metrics, 0.50),
        "poll_lateness_p99_s_at_most": lateness_quantile(metrics, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument(
        "--settle-polls", type=int, default=4, help="poll rounds to wait once all are in flight"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs, each from a fresh database")
    parser.add_argument(
        "--quick", action="store_true", help="1,000 rows polled every 2 s: for CI, under a minute"
    )
    args = parser.parse_args()
    rows, poll_interval_s, settle_polls = (
        (1000, 2.0, 3) if args.quick else (args.rows, args.poll_interval, args.settle_polls)
    )
    runs = [asyncio.run(bench(rows, poll_interval_s, settle_polls)) for _ in range(args.repeat)]
    print(json.dumps(with_spread(runs), indent=2))


if __name__ == "__main__":
    main()

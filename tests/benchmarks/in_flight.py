"""Benchmark: many generations in flight in one `listener run` process.

    python -m tests.benchmarks.in_flight --rows 10000 --poll-interval 5

Inserts `--rows` requests whose simulated generation outlasts the run, waits until all
are claimed and have been polled a few times, then prints the listener's memory per row
in flight and how late its polls started (from its /metrics histogram). The AI simulator
runs in a process of its own, so that it does not share the listener's CPU.
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

from listener.migrate import migrate
from listener.playground.embedded import EmbeddedPostgres, free_port
from tests.benchmarks.harness import listener_env, listener_process, memory_mib, simulator_process


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
    work = Path(tempfile.mkdtemp(prefix="listener-inflight-bench-"))
    with EmbeddedPostgres() as pg:
        conn = await asyncpg.connect(pg.dsn)
        await migrate(conn)
        http_port = free_port()
        try:
            async with simulator_process(duration_s=3600, keep_produced=False) as ai_url:
                env = listener_env(
                    pg.dsn,
                    ai_url,
                    work / "spool",
                    LISTENER_POLL_INTERVAL=str(poll_interval_s),
                    LISTENER_CONCURRENCY=str(rows),
                    LISTENER_PER_USER_LIMIT=str(rows),
                    LISTENER_HTTP_PORT=str(http_port),
                )
                async with listener_process(env, work / "listener.log") as process:
                    return await measure(conn, process.pid, rows, poll_interval_s, settle_polls, http_port)
        finally:
            await conn.close()


async def measure(
    conn: asyncpg.Connection, pid: int, rows: int, poll_interval_s: float, settle_polls: int, http_port: int
) -> dict[str, object]:
    """Inserts the rows, waits until all are in flight and polled, and reads the figures."""
    await asyncio.sleep(3.0)
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
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/metrics") as r:
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
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.rows, args.poll_interval, args.settle_polls)), indent=2))


if __name__ == "__main__":
    main()

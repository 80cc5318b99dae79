"""Benchmark: insert-to-claim latency at a steady insert rate, beside a bare LISTEN client.

    python -m tests.benchmarks.claim_latency --rate 200 --seconds 10
    python -m tests.benchmarks.claim_latency --rate 50 --seconds 10 --backlog 20000 --per-user-limit 3

A real `listener run` process claims rows inserted at `--rate` per second; the rows then
stay in flight (the simulated generation outlasts the run). Prints percentiles of the
time from each insert to its claim, and of the time a plain asyncpg LISTEN connection
takes to hear the same notifications. `--backlog N` first gives one user N waiting rows
(held back by the per-user limit): the latency of everyone else's rows shows what that
backlog costs them.
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

from listener.migrate import migrate
from listener.playground.embedded import EmbeddedPostgres
from listener.playground.simulator import AISimulator, SimulatorConfig
from tests.benchmarks.harness import listener_env, listener_process


def summary(values_ms: list[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p90": round(ordered[int(0.90 * (len(ordered) - 1))], 2),
        "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
        "max": round(ordered[-1], 2),
    }


BACKLOG_USER = uuid.UUID("00000000-0000-0000-0000-00000000b10c")


async def bench(
    rate: float, seconds: float, users: int, backlog: int, per_user_limit: int | None
) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="listener-claim-bench-"))
    count = int(rate * seconds)
    with EmbeddedPostgres() as pg:
        conn = await asyncpg.connect(pg.dsn)
        await migrate(conn)
        simulator = AISimulator(SimulatorConfig(duration_s=3600))
        await simulator.start()
        env = listener_env(
            pg.dsn,
            simulator.base_url,
            work / "spool",
            LISTENER_POLL_INTERVAL="30",
            LISTENER_CONCURRENCY=str(count + 100),
            LISTENER_PER_USER_LIMIT=str(per_user_limit or count),
        )
        if backlog:
            await conn.execute(
                "INSERT INTO public.ai_generated_models "
                "(user_id, generation_type, prompt, model_name, storage_path, status) "
                "SELECT $1, 'text_to_3d', 'backlog ' || n, 'Backlog', '', 'pending' "
                "FROM generate_series(1, $2) AS n",
                BACKLOG_USER,
                backlog,
            )
        heard: dict[str, float] = {}
        bare = await asyncpg.connect(pg.dsn)
        await bare.add_listener("listener_jobs", lambda *a: heard.setdefault(a[3], time.perf_counter()))
        async with listener_process(env, work / "listener.log"):
            await asyncio.sleep(2.0)  # the listener is up and listening
            owners = [uuid.uuid4() for _ in range(users)]
            sent: dict[str, float] = {}
            start = time.perf_counter()
            for n in range(count):
                await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
                model_id = uuid.uuid4()
                sent[str(model_id)] = time.perf_counter()
                await conn.execute(
                    "INSERT INTO public.ai_generated_models "
                    "(id, user_id, generation_type, prompt, model_name, storage_path, status) "
                    "VALUES ($1, $2, 'text_to_3d', $3, 'Bench', '', 'pending')",
                    model_id,
                    owners[n % users],
                    f"model {n}",
                )
            achieved = count / (time.perf_counter() - start)
            deadline = time.monotonic() + 30
            while await conn.fetchval(
                "SELECT count(*) FROM listener.jobs WHERE claimed_at IS NULL AND user_id <> $1", BACKLOG_USER
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("rows were not claimed in time")
                await asyncio.sleep(0.1)
        claims = await conn.fetch(
            "SELECT extract(epoch FROM claimed_at - enqueued_at)::float8 * 1000 AS ms FROM listener.jobs "
            "WHERE user_id <> $1",
            BACKLOG_USER,
        )
        await bare.close()
        await conn.close()
        await simulator.stop()
    return {
        "rows": count,
        "backlog_of_one_user": backlog,
        "insert_rate_per_s": round(achieved, 1),
        "listener_insert_to_claim_ms": summary([r["ms"] for r in claims]),
        "bare_listen_insert_to_notification_ms": summary(
            [(heard[k] - sent[k]) * 1000 for k in sent if k in heard]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="inserts per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=0, help="rows one user has waiting before the run")
    parser.add_argument("--per-user-limit", type=int, help="LISTENER_PER_USER_LIMIT (default: no limit)")
    args = parser.parse_args()
    result = bench(args.rate, args.seconds, args.users, args.backlog, args.per_user_limit)
    print(json.dumps(asyncio.run(result), indent=2))


if __name__ == "__main__":
    main()

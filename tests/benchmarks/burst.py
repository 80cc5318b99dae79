"""Benchmark: a burst of rows committed at once, taken by one and two listeners and by procrastinate.

    python -m tests.benchmarks.burst                  # 20,000 rows
    python -m tests.benchmarks.burst --repeat 3       # each case three times: the spread
    python -m tests.benchmarks.burst --quick          # 3,000 rows, once, for CI

On one embedded Postgres, one case after another, each on fresh tables and with its
consumers ready (and past one warm-up item) before the burst:

- the listener, one `listener run` process and then two: `--rows` pending rows of 20 users
  inserted in one statement (INSERT ... SELECT generate_series), every row claimed to
  `processing` and kept in flight (slots and per-user limit hold them all; the simulated
  generation outlasts the run);
- procrastinate, one worker process and then two, 50 slots each, a no-op task: `--rows`
  jobs deferred in one statement with `batch_defer_async`.

The burst's commit time is the server's own record of it (`pg_xact_commit_timestamp`;
`track_commit_timestamp` is turned on for the run); each item's start is the listener's
`claimed_at` or the `at` of procrastinate's `started` event, on the same clock. Each case
reports the items started, the seconds from the commit to the first, the median and the
last start, items per second up to the last and the items started in each 10 s. Items not
started within `--deadline` seconds are reported, not waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from listener.playground.embedded import EmbeddedPostgres
from listener.playground.local_s3 import LocalS3
from tests.benchmarks.claim_latency import (
    READY_TIMEOUT_S,
    WARM_UP_USER,
    Stage,
    fresh_tables,
    staged,
    wait_until,
    warm_up_rows,
)
from tests.benchmarks.harness import listener_process, wait_until_ready
from tests.benchmarks.peers import (
    NOOP_TASK,
    procrastinate_started,
    procrastinate_workers,
    stop_process,
)

BURST_USERS = 20
PROCRASTINATE_CONCURRENCY = 50
CASES = (("listener", 1), ("listener", 2), ("procrastinate", 1), ("procrastinate", 2))

CaseResult = dict[str, object]

# Per kind of item, the starts of the burst's items (those past the warm-up) and their count.
_LISTENER_STARTS = (
    "SELECT claimed_at AS at FROM listener.jobs WHERE user_id <> $1 AND claimed_at IS NOT NULL",
    "SELECT count(*) FROM listener.jobs WHERE user_id <> $1 AND claimed_at IS NOT NULL",
)
_PROCRASTINATE_STARTS = (
    "SELECT at FROM procrastinate_events WHERE type = 'started' AND job_id > $1",
    "SELECT count(*) FROM procrastinate_events WHERE type = 'started' AND job_id > $1",
)


async def starts_after(
    conn: asyncpg.Connection, starts_sql: str, key: object, commit_at: object
) -> CaseResult:
    """Seconds from the commit to the first, median and last start, items per second to the last, and
    the items started in each 10 s after the commit (how the rate holds up as the burst goes on)."""
    row = await conn.fetchrow(
        "WITH s AS (" + starts_sql + ") SELECT count(*) AS started, "
        "extract(epoch FROM min(at) - $2)::float8 AS first_s, "
        "extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY at) - $2)::float8 AS median_s, "
        "extract(epoch FROM max(at) - $2)::float8 AS last_s FROM s",
        key,
        commit_at,
    )
    assert row is not None
    slices = await conn.fetch(
        "WITH s AS (" + starts_sql + ") SELECT floor(extract(epoch FROM at - $2) / 10)::int AS slice, "
        "count(*) AS started FROM s GROUP BY slice ORDER BY slice",
        key,
        commit_at,
    )
    per_10s = [0] * (max((r["slice"] for r in slices), default=-1) + 1)
    for r in slices:
        per_10s[max(r["slice"], 0)] += r["started"]
    last_s = row["last_s"]
    return {
        "started": row["started"],
        "first_s": _round(row["first_s"]),
        "median_s": _round(row["median_s"]),
        "last_s": _round(last_s),
        "per_s": round(row["started"] / last_s, 1) if last_s else None,
        "started_per_10s": per_10s,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def track_commit_timestamps(pg: EmbeddedPostgres) -> None:
    """Turns on `track_commit_timestamp` (a restart): the burst's commit is then read from the server."""
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    finally:
        await conn.close()
    pg.restart()


async def listener_case(stage: Stage, rows: int, replicas: int, deadline_s: float) -> CaseResult:
    """`replicas` listeners ready, then `rows` pending rows committed in one statement."""
    await fresh_tables(stage.conn)
    async with contextlib.AsyncExitStack() as stack:
        envs = [stage.listener_env(rows) for _ in range(replicas)]
        for n, env in enumerate(envs):
            process = await stack.enter_async_context(listener_process(env, stage.work / f"listener-{n}.log"))
            stack.push_async_callback(stop_process, process)
        for env in envs:
            await wait_until_ready(env, READY_TIMEOUT_S)
        await warm_up_rows(stage.conn)
        async with stage.conn.transaction():
            await stage.conn.execute(
                "INSERT INTO public.ai_generated_models "
                "(user_id, generation_type, prompt, model_name, storage_path, status) "
                "SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(n % $2 + 1), 12, '0'))::uuid, "
                "'text_to_3d', 'burst ' || n, 'Burst', '', 'pending' FROM generate_series(1, $1) AS n",
                rows,
                BURST_USERS,
            )
            xid = await stage.conn.fetchval("SELECT xid(pg_current_xact_id())::text")
        commit_at = await stage.conn.fetchval("SELECT pg_xact_commit_timestamp($1::text::xid)", xid)
        started_sql, count_sql = _LISTENER_STARTS

        async def all_claimed() -> bool:
            return bool(await stage.conn.fetchval(count_sql, WARM_UP_USER) >= rows)

        await wait_until(all_claimed, deadline_s, interval_s=0.25)
        result = await starts_after(stage.conn, started_sql, WARM_UP_USER, commit_at)
        owners = await stage.conn.fetchval(
            "SELECT count(DISTINCT lease_owner) FROM listener.jobs WHERE user_id <> $1", WARM_UP_USER
        )
    return {"rows": rows, "replicas": replicas, **result, "replicas_that_claimed": owners}


async def procrastinate_case(stage: Stage, rows: int, workers: int, deadline_s: float) -> CaseResult:
    """`workers` procrastinate workers ready, then `rows` jobs deferred in one statement."""
    await fresh_tables(stage.conn)
    jobs = stage.deferrer.configure_task(name=NOOP_TASK)
    async with procrastinate_workers(stage.dsn, stage.conn, workers, PROCRASTINATE_CONCURRENCY, stage.work):
        warm_up = [await jobs.defer_async() for _ in range(workers)]
        started_sql, count_sql = _PROCRASTINATE_STARTS

        async def warm_up_started() -> bool:
            return await procrastinate_started(stage.conn, warm_up) == len(warm_up)

        if not await wait_until(warm_up_started, READY_TIMEOUT_S):
            raise SystemExit(f"procrastinate's warm-up jobs did not start within {READY_TIMEOUT_S:g} s")
        last_warm_up = max(warm_up)
        job_ids = await jobs.batch_defer_async(*({} for _ in range(rows)))
        commit_at = await stage.conn.fetchval(
            "SELECT pg_xact_commit_timestamp(xmin) FROM procrastinate_events "
            "WHERE job_id = $1 AND type = 'deferred'",
            job_ids[0],
        )

        async def all_started() -> bool:
            return bool(await stage.conn.fetchval(count_sql, last_warm_up) >= rows)

        await wait_until(all_started, deadline_s, interval_s=0.25)
        result = await starts_after(stage.conn, started_sql, last_warm_up, commit_at)
    return {"jobs": rows, "workers": workers, "concurrency_per_worker": PROCRASTINATE_CONCURRENCY, **result}


async def bench(rows: int, repeat: int, deadline_s: float) -> dict[str, object]:
    """Every case, `repeat` times; returns each run and, per case, the spread across runs."""
    work = Path(tempfile.mkdtemp(prefix="listener-burst-bench-"))
    runs: dict[str, list[CaseResult]] = {_case_key(kind, n): [] for kind, n in CASES}
    with EmbeddedPostgres() as pg, LocalS3() as s3:
        await track_commit_timestamps(pg)
        async with staged(pg, s3.config(), work) as stage:
            for _ in range(repeat):
                for kind, n in CASES:
                    async with asyncio.timeout(deadline_s + 4 * READY_TIMEOUT_S + 120):
                        if kind == "listener":
                            result = await listener_case(stage, rows, n, deadline_s)
                        else:
                            result = await procrastinate_case(stage, rows, n, deadline_s)
                    runs[_case_key(kind, n)].append(result)
    return {
        "rows": rows,
        "repeat": repeat,
        "spread": {case: spread(case_runs) for case, case_runs in runs.items()},
        "runs": runs,
    }


def _case_key(kind: str, processes: int) -> str:
    return f"{kind} x{processes}"


def spread(runs: Sequence[CaseResult]) -> dict[str, object]:
    """[min, max] across runs of each figure, and the fewest items started in any run."""
    ranges: dict[str, object] = {"fewest_started": int(min(_number(run["started"]) for run in runs))}
    for key in ("first_s", "median_s", "last_s", "per_s"):
        values = [_number(run[key]) for run in runs if run[key] is not None]
        ranges[key] = [min(values), max(values)] if values else None
    return ranges


def _number(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


def markdown_table(result: dict[str, object]) -> str:
    """One line per case: items started of sent, commit to last start, items per second (ranges)."""
    spreads = result["spread"]
    assert isinstance(spreads, dict)
    rows = result["rows"]
    lines = [
        "| case | started (fewest in a run) | commit to first start (s) | commit to last start (s) "
        "| per second |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for case, figures in spreads.items():
        fewest = int(figures["fewest_started"])
        cells = [
            f"{fewest} of {rows}",
            _range(figures["first_s"]),
            _range(figures["last_s"]),
            _range(figures["per_s"]),
        ]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _range(bounds: object) -> str:
    if bounds is None:
        return "n/a"
    assert isinstance(bounds, list)
    low, high = bounds
    return f"{low:g}" if low == high else f"{low:g}..{high:g}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000, help="rows (and jobs) in the burst")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per case; the spread is their min and max"
    )
    parser.add_argument(
        "--deadline", type=float, default=300.0, help="seconds a case may take after the burst"
    )
    parser.add_argument("--quick", action="store_true", help="3,000 rows, once, for CI")
    args = parser.parse_args()
    rows, repeat, deadline = (
        (3_000, 1, 60.0) if args.quick else (args.rows, max(1, args.repeat), args.deadline)
    )
    result = asyncio.run(bench(rows, repeat, deadline))
    print(json.dumps(result, indent=2))
    print()
    print(markdown_table(result))


if __name__ == "__main__":
    main()

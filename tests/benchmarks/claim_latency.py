"""Benchmark: insert-to-claim latency at steady insert rates, beside the NOTIFY floor and procrastinate.

    python -m tests.benchmarks.claim_latency                          # rates 50,200,500; 10 s each
    python -m tests.benchmarks.claim_latency --repeat 3               # each rate three times: the spread
    python -m tests.benchmarks.claim_latency --quick                  # one short run per rate, no verdict
    python -m tests.benchmarks.claim_latency --rates 50 --backlog 20000 --per-user-limit 3

On one embedded Postgres, at each rate, three phases run one after another, each on fresh
tables and each with its consumer in a process of its own, ready (and past one warm-up
item) before the first timed insert:

1. the floor: a bare asyncpg LISTEN client on the listener's own trigger, which answers
   each notification with one UPDATE setting `claimed_at = clock_timestamp()`;
2. the listener: `listener run`, claiming rows to `processing` (the simulated generation
   outlasts the run, so each claimed row stays in flight);
3. procrastinate: a worker with 50 slots running a no-op task, its jobs deferred one by
   one with `defer_async` at the same rate.

Every latency is taken on the server's clock: `listener.jobs.claimed_at - enqueued_at` for
the floor and the listener, `started.at - deferred.at` of `procrastinate_events` for
procrastinate (`tests/benchmarks/peers.py` says why these measure alike). Each phase
reports the items sent, those measured and those never heard, claimed or started within
the drain time after the last insert, and p50/p90/p99/max in milliseconds. The JSON result
comes first, then a markdown table. Without `--quick`, the run ends with a verdict on the
listener's targets (p99 at most 5 ms up to 200/s and 25 ms above; p50 within 3x the
floor's; p50 and p99 below procrastinate's) and exits 1 when one is missed.

`--backlog N` first gives one user N waiting rows, held back by the per-user limit, and
runs the listener alone: the latency of everyone else's rows shows what that backlog
costs them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import procrastinate

from listener.adapters.postgres.migrate import migrate
from listener.adapters.storage.config import StorageConfig
from listener.playground.embedded import EmbeddedPostgres
from listener.playground.local_s3 import LocalS3
from tests.benchmarks.harness import listener_env, listener_process, simulator_process, wait_until_ready
from tests.benchmarks.peers import (
    NOOP_TASK,
    apply_procrastinate_schema,
    floor_process,
    procrastinate_app,
    procrastinate_latencies_ms,
    procrastinate_started,
    procrastinate_workers,
    stop_process,
)

PHASES = ("floor", "listener", "procrastinate")
PERCENTILES = ("p50", "p90", "p99", "max")
PROCRASTINATE_CONCURRENCY = 50
BACKLOG_USER = uuid.UUID("00000000-0000-0000-0000-00000000b10c")
WARM_UP_USER = uuid.UUID("00000000-0000-0000-0000-0000000000a0")
READY_TIMEOUT_S = 60.0

PhaseResult = dict[str, object]
T = TypeVar("T")


def summary(values_ms: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of `values_ms` (nearest rank), rounded to 0.01 ms; None when empty."""
    ordered = sorted(values_ms)
    if not ordered:
        return dict.fromkeys(PERCENTILES)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))], 2)

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": round(ordered[-1], 2)}


def measured(sent: int, values_ms: Sequence[float | None], rate_per_s: float) -> PhaseResult:
    """A phase's figures: how many were sent and measured, and the percentiles of those measured."""
    found = [v for v in values_ms if v is not None]
    return {
        "sent": sent,
        "measured": len(found),
        "not_measured": sent - len(found),
        "rate_per_s": round(rate_per_s, 1),
        "ms": summary(found),
    }


async def fresh_tables(conn: asyncpg.Connection) -> None:
    """Empties the app's rows (and with them the listener's jobs) and procrastinate's jobs and events."""
    await conn.execute("TRUNCATE public.ai_generated_models, procrastinate_jobs CASCADE")


async def insert_row(conn: asyncpg.Connection, user_id: uuid.UUID, n: int) -> uuid.UUID:
    """Inserts one pending request as an app would; returns its id."""
    model_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO public.ai_generated_models "
        "(id, user_id, generation_type, prompt, model_name, storage_path, status) "
        "VALUES ($1, $2, 'text_to_3d', $3, 'Bench', '', 'pending')",
        model_id,
        user_id,
        f"model {n}",
    )
    return model_id


async def paced(count: int, rate: float, send: Callable[[int], Awaitable[T]]) -> tuple[list[T], float]:
    """Calls `send(n)` for n in 0..count-1 at `rate` per second; returns the answers and the rate achieved."""
    answers: list[T] = []
    start = time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        answers.append(await send(n))
    return answers, count / max(time.perf_counter() - start, 1e-9)


async def wait_until(done: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Polls `done` until it is true (True) or `timeout_s` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not await done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval_s)
    return True


async def claimed_count(conn: asyncpg.Connection, model_ids: Sequence[uuid.UUID]) -> int:
    count: int = await conn.fetchval(
        "SELECT count(claimed_at) FROM listener.jobs WHERE model_id = ANY($1::uuid[])", list(model_ids)
    )
    return count


async def claim_latencies_ms(conn: asyncpg.Connection, model_ids: Sequence[uuid.UUID]) -> list[float | None]:
    """`claimed_at - enqueued_at` of each row on the server's clock; None for a row not claimed."""
    rows = await conn.fetch(
        "SELECT extract(epoch FROM claimed_at - enqueued_at)::float8 * 1000 AS ms "
        "FROM listener.jobs WHERE model_id = ANY($1::uuid[])",
        list(model_ids),
    )
    latencies: list[float | None] = [row["ms"] for row in rows]
    return latencies + [None] * (len(model_ids) - len(rows))


async def warm_up_rows(conn: asyncpg.Connection) -> None:
    """One row, not measured, taken before the timed ones: the consumer's first claim is behind it."""
    model_id = await insert_row(conn, WARM_UP_USER, -1)
    if not await wait_until(lambda: _claimed(conn, model_id), READY_TIMEOUT_S):
        raise SystemExit(f"the warm-up row was not taken within {READY_TIMEOUT_S:g} s")


async def _claimed(conn: asyncpg.Connection, model_id: uuid.UUID) -> bool:
    return await claimed_count(conn, [model_id]) == 1


@dataclass
class Stage:
    """What every phase of a run shares: the database, the AI simulator, Storage, a folder, a deferrer."""

    dsn: str
    conn: asyncpg.Connection
    ai_url: str
    storage: StorageConfig
    work: Path
    deferrer: procrastinate.App

    def listener_env(self, rows: int, per_user_limit: int | None = None) -> dict[str, str]:
        """A `listener run` whose slots and per-user limit hold `rows` in flight (or the given limit)."""
        return listener_env(
            self.dsn,
            self.ai_url,
            self.work / "spool",
            self.storage,
            LISTENER_POLL_INTERVAL="30",
            LISTENER_CONCURRENCY=str(rows + 100),
            LISTENER_PER_USER_LIMIT=str(per_user_limit or rows + 100),
        )


@contextlib.asynccontextmanager
async def staged(pg: EmbeddedPostgres, storage: StorageConfig, work: Path) -> AsyncIterator[Stage]:
    """The listener's and procrastinate's schemas on `pg`, the AI simulator and a deferrer."""
    conn = await asyncpg.connect(pg.dsn)
    try:
        await migrate(conn)
        await apply_procrastinate_schema(pg.dsn)
        async with (
            simulator_process(duration_s=3600, keep_produced=False) as ai_url,
            procrastinate_app(pg.dsn).open_async() as deferrer,
        ):
            yield Stage(pg.dsn, conn, ai_url, storage, work, deferrer)
    finally:
        await conn.close()


async def rows_phase(stage: Stage, rate: float, count: int, users: int, drain_s: float) -> PhaseResult:
    """Warms up, inserts `count` rows at `rate` and waits up to `drain_s` for all to be taken."""
    await warm_up_rows(stage.conn)
    owners = [uuid.uuid4() for _ in range(users)]
    model_ids, achieved = await paced(count, rate, lambda n: insert_row(stage.conn, owners[n % users], n))
    await wait_until(lambda: _all_claimed(stage.conn, model_ids), drain_s)
    return measured(count, await claim_latencies_ms(stage.conn, model_ids), achieved)


async def _all_claimed(conn: asyncpg.Connection, model_ids: Sequence[uuid.UUID]) -> bool:
    return await claimed_count(conn, model_ids) == len(model_ids)


async def floor_phase(stage: Stage, rate: float, count: int, users: int, drain_s: float) -> PhaseResult:
    """The bare LISTEN client: the least any consumer of these notifications can take."""
    await fresh_tables(stage.conn)
    async with floor_process(stage.dsn, stage.work / "floor.log"):
        return await rows_phase(stage, rate, count, users, drain_s)


async def listener_phase(
    stage: Stage,
    rate: float,
    count: int,
    users: int,
    drain_s: float,
    backlog: int,
    per_user_limit: int | None,
) -> PhaseResult:
    """`listener run` claiming the rows; `backlog` rows of one user wait before it starts."""
    await fresh_tables(stage.conn)
    if backlog:
        await stage.conn.execute(
            "INSERT INTO public.ai_generated_models "
            "(user_id, generation_type, prompt, model_name, storage_path, status) "
            "SELECT $1, 'text_to_3d', 'backlog ' || n, 'Backlog', '', 'pending' "
            "FROM generate_series(1, $2) AS n",
            BACKLOG_USER,
            backlog,
        )
    env = stage.listener_env(count + backlog, per_user_limit)
    async with listener_process(env, stage.work / "listener.log") as process:
        try:
            await wait_until_ready(env, READY_TIMEOUT_S)
            return await rows_phase(stage, rate, count, users, drain_s)
        finally:
            await stop_process(process)


async def procrastinate_phase(stage: Stage, rate: float, count: int, drain_s: float) -> PhaseResult:
    """A procrastinate worker (50 slots, no-op task) taking jobs deferred one by one at `rate`."""
    await fresh_tables(stage.conn)
    jobs = stage.deferrer.configure_task(name=NOOP_TASK)
    async with procrastinate_workers(stage.dsn, stage.conn, 1, PROCRASTINATE_CONCURRENCY, stage.work):
        warm_up = [await jobs.defer_async()]
        if not await wait_until(lambda: _all_started(stage.conn, warm_up), READY_TIMEOUT_S):
            raise SystemExit(f"procrastinate's warm-up job did not start within {READY_TIMEOUT_S:g} s")
        job_ids, achieved = await paced(count, rate, lambda _n: jobs.defer_async())
        await wait_until(lambda: _all_started(stage.conn, job_ids), drain_s)
    latencies = await procrastinate_latencies_ms(stage.conn, job_ids)
    return measured(count, list(latencies.values()), achieved)


async def _all_started(conn: asyncpg.Connection, job_ids: Sequence[int]) -> bool:
    return await procrastinate_started(conn, job_ids) == len(job_ids)


async def bench(
    rates: Sequence[float],
    seconds: float,
    repeat: int,
    users: int,
    drain_s: float,
    backlog: int,
    per_user_limit: int | None,
) -> dict[str, object]:
    """Every rate, `repeat` times; returns each run's phases and, per rate, the spread across runs."""
    work = Path(tempfile.mkdtemp(prefix="listener-claim-bench-"))
    phases = ("listener",) if backlog else PHASES
    runs: dict[str, list[dict[str, PhaseResult]]] = {_rate_key(rate): [] for rate in rates}
    with EmbeddedPostgres() as pg, LocalS3() as s3:
        async with staged(pg, s3.config(), work) as stage:
            for _ in range(repeat):
                for rate in rates:
                    count = max(1, int(rate * seconds))
                    bound_s = seconds * 3 + drain_s + 3 * READY_TIMEOUT_S
                    run: dict[str, PhaseResult] = {}
                    for phase in phases:
                        async with asyncio.timeout(bound_s):
                            if phase == "floor":
                                run[phase] = await floor_phase(stage, rate, count, users, drain_s)
                            elif phase == "listener":
                                run[phase] = await listener_phase(
                                    stage, rate, count, users, drain_s, backlog, per_user_limit
                                )
                            else:
                                run[phase] = await procrastinate_phase(stage, rate, count, drain_s)
                    runs[_rate_key(rate)].append(run)
    return {
        "seconds_per_rate": seconds,
        "repeat": repeat,
        "users": users,
        "backlog_of_one_user": backlog,
        "per_user_limit": per_user_limit,
        "spread": {rate: spread(rate_runs) for rate, rate_runs in runs.items()},
        "runs": runs,
    }


def _rate_key(rate: float) -> str:
    return f"{rate:g}"


def spread(runs: Sequence[dict[str, PhaseResult]]) -> dict[str, dict[str, object]]:
    """Per phase: the items sent and measured over all runs, and [min, max] of each percentile across runs."""
    phases: dict[str, dict[str, object]] = {}
    for phase in runs[0]:
        results = [run[phase] for run in runs]
        ranges: dict[str, list[float] | None] = {}
        for key in PERCENTILES:
            values = [v for r in results if (v := _ms(r)[key]) is not None]
            ranges[key] = [min(values), max(values)] if values else None
        phases[phase] = {
            "sent": sum(_int(r["sent"]) for r in results),
            "measured": sum(_int(r["measured"]) for r in results),
            "not_measured": sum(_int(r["not_measured"]) for r in results),
            "ms": ranges,
        }
    return phases


def _ms(result: PhaseResult) -> dict[str, float | None]:
    ms = result["ms"]
    assert isinstance(ms, dict)
    return ms


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def verdict(runs: dict[str, list[dict[str, PhaseResult]]]) -> list[dict[str, object]]:
    """Each target of the listener, at each rate, judged on its worst run."""
    checks: list[dict[str, object]] = []
    for rate_key, rate_runs in runs.items():
        rate = float(rate_key)
        p99_target = 5.0 if rate <= 200 else 25.0
        worst_p99 = max(_value(run["listener"], "p99") for run in rate_runs)
        checks.append(
            _check(rate_key, "listener p99 (ms)", f"<= {p99_target:g}", worst_p99, worst_p99 <= p99_target)
        )
        ratio = max(_value(run["listener"], "p50") / _value(run["floor"], "p50") for run in rate_runs)
        checks.append(_check(rate_key, "listener p50 / floor p50", "<= 3", ratio, ratio <= 3))
        for key in ("p50", "p99"):
            ratio = max(_value(run["listener"], key) / _value(run["procrastinate"], key) for run in rate_runs)
            checks.append(_check(rate_key, f"listener {key} / procrastinate {key}", "< 1", ratio, ratio < 1))
        missed = sum(_int(run["listener"]["not_measured"]) for run in rate_runs)
        checks.append(_check(rate_key, "listener rows not claimed", "0", missed, missed == 0))
    return checks


def _value(result: PhaseResult, key: str) -> float:
    value = _ms(result)[key]
    return float("inf") if value is None else value


def _check(rate: str, what: str, target: str, worst: float, met: bool) -> dict[str, object]:
    return {"rate_per_s": rate, "check": what, "target": target, "worst": round(worst, 2), "met": met}


def markdown_table(result: dict[str, object]) -> str:
    """The table of the spread: floor p50, listener and procrastinate p50 / p99, items measured of sent."""
    spreads = result["spread"]
    assert isinstance(spreads, dict)
    lines = [
        "| rate (/s) | floor p50 (ms) | listener p50 / p99 (ms) | procrastinate p50 / p99 (ms) "
        "| measured of sent (floor, listener, procrastinate) |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for rate, phases in spreads.items():
        cells = [rate]
        for phase, keys in (
            ("floor", ("p50",)),
            ("listener", ("p50", "p99")),
            ("procrastinate", ("p50", "p99")),
        ):
            cells.append(" / ".join(_range(phases, phase, key) for key in keys) if phase in phases else "-")
        cells.append(
            ", ".join(f"{phases[p]['measured']}/{phases[p]['sent']}" if p in phases else "-" for p in PHASES)
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _range(phases: dict[str, dict[str, object]], phase: str, key: str) -> str:
    ms = phases[phase]["ms"]
    assert isinstance(ms, dict)
    bounds = ms[key]
    if bounds is None:
        return "n/a"
    low, high = bounds
    return f"{low:.2f}" if low == high else f"{low:.2f}..{high:.2f}"


def parse_rates(text: str) -> list[float]:
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError("rates are positive numbers, comma-separated")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=parse_rates, default=[50.0, 200.0, 500.0], help="inserts per second")
    parser.add_argument("--rate", type=float, help="one rate instead of --rates")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of inserts per phase")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per rate; the spread is their min and max"
    )
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument(
        "--drain", type=float, default=15.0, help="seconds after the last insert for the rest to be taken"
    )
    parser.add_argument("--quick", action="store_true", help="one 2 s run per rate, for CI; no verdict")
    parser.add_argument("--backlog", type=int, default=0, help="rows one user has waiting (listener only)")
    parser.add_argument("--per-user-limit", type=int, help="LISTENER_PER_USER_LIMIT (default: no limit)")
    args = parser.parse_args()
    rates = [args.rate] if args.rate else args.rates
    seconds, repeat, drain = (2.0, 1, 5.0) if args.quick else (args.seconds, args.repeat, args.drain)
    result = asyncio.run(
        bench(rates, seconds, max(1, repeat), args.users, drain, args.backlog, args.per_user_limit)
    )
    runs = result["runs"]
    assert isinstance(runs, dict)
    checks = [] if args.quick or args.backlog else verdict(runs)
    if checks:
        result["verdict"] = checks
    print(json.dumps(result, indent=2))
    print()
    print(markdown_table(result))
    missed = [check for check in checks if not check["met"]]
    for check in missed:
        where = f"missed at {check['rate_per_s']}/s: {check['check']}"
        print(f"{where} = {check['worst']} (target {check['target']})")
    raise SystemExit(1 if missed else 0)


if __name__ == "__main__":
    main()

"""Benchmark: one of two replicas is killed with rows in flight; how soon the other resumes them.

    python -m tests.benchmarks.failover --rows 500 --lease 10 --repeat 3
    python -m tests.benchmarks.failover --quick

Two `listener run` processes share `--rows` generations that outlast the run. Once every
row is claimed and submitted (its AI task id stored) and both replicas hold some, the one
holding more is killed with SIGKILL: it hands nothing back, so its leases must run out.

Takeover of a row is the time from the kill until the AI server receives the first poll
of that row's task sent after the survivor claimed the row (the row's `claimed_at` with
the survivor as `lease_owner`): a poll the dead replica sent just before it died never
counts. The figure that matters is the largest, when the survivor polls every row of the
dead replica again; it is compared with the lease plus 5 s, and with the moment the dead
replica's leases ran out (the kill comes right after the last submission, so they have
most of a lease left).

Repeated submissions are counted twice over: prompts (unique per row) the AI server
received more than once, and rows whose stored AI task id changed after the kill. Both
must be 0.

The AI simulator runs in a process of its own and records the time of every poll; a
second port of that process answers with what it recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from listener.adapters.postgres.migrate import migrate
from listener.playground.embedded import EmbeddedPostgres, free_port
from listener.playground.local_s3 import LocalS3
from tests.benchmarks.harness import listener_env, listener_process, percentile, wait_until_ready, with_spread

# The simulator, with every poll's time and every submission kept and served as JSON on a
# second port: GET /record?since=<unix time> answers each task's polls after then.
_RECORDING_SIMULATOR = """
import asyncio, collections, json, sys, time
from aiohttp import web
from listener.playground.simulator import AISimulator, SimulatorConfig

class TimedPolls(collections.Counter):
    def __init__(self):
        super().__init__()
        self.times = collections.defaultdict(list)

    def __setitem__(self, key, value):
        self.times[key].append(time.time())
        super().__setitem__(key, value)

async def main(port, record_port, config):
    simulator = AISimulator(SimulatorConfig(**config))
    polls = TimedPolls()
    simulator.polls = polls

    async def record(request):
        since = float(request.query.get("since", "0"))
        later = {task_id: [t for t in times if t > since] for task_id, times in polls.times.items()}
        submissions = [[s.fields.get("prompt"), s.task_id, s.received_at] for s in simulator.submissions]
        return web.json_response({"polls_after": later, "submissions": submissions})

    app = web.Application()
    app.router.add_get("/record", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", record_port).start()
    await simulator.start("127.0.0.1", port)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])))
"""

# A generation that outlasts any run: every row stays in flight and keeps being polled.
_GENERATION_S = 3600
SETUP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class RecordingSimulator:
    """Where the simulator listens for the listener, and where it tells what it recorded."""

    url: str
    record_url: str

    async def record(self, since: float) -> dict[str, Any]:
        """The times (unix) of each task's polls after `since`, and every submission received."""
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(self.record_url, params={"since": repr(since)}) as answer,
        ):
            answer.raise_for_status()
            recorded: dict[str, Any] = await answer.json()
            return recorded


@contextlib.asynccontextmanager
async def recording_simulator(**config: object) -> AsyncIterator[RecordingSimulator]:
    """The recording simulator in a process of its own; stopped at the end of the block."""
    port, record_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RECORDING_SIMULATOR,
        str(port),
        str(record_port),
        json.dumps(config),
        stdout=asyncio.subprocess.DEVNULL,
    )
    simulator = RecordingSimulator(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{record_port}/record")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await simulator.record(time.time())
                break
            except (aiohttp.ClientError, TimeoutError):
                if time.monotonic() > deadline or process.returncode is not None:
                    raise SystemExit("the recording simulator did not start") from None
                await asyncio.sleep(0.1)
        yield simulator
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


def replica_of(owner: str | None, pids: dict[int, str]) -> str | None:
    """Which replica a lease owner name (`host:pid:suffix`) belongs to."""
    if owner is None:
        return None
    parts = owner.split(":")
    return pids.get(int(parts[-2])) if len(parts) >= 3 and parts[-2].isdigit() else None


async def insert_rows(conn: asyncpg.Connection, rows: int) -> None:
    """One row per transaction, each of its own user: each insert's NOTIFY reaches both
    replicas, which race for it, so the rows end up split between them."""
    for n in range(rows):
        await conn.execute(
            "INSERT INTO public.ai_generated_models "
            "(user_id, generation_type, prompt, model_name, storage_path, status) "
            "VALUES (gen_random_uuid(), 'text_to_3d', $1, 'Failover', '', 'pending')",
            f"failover model {n}",
        )


async def jobs_by_row(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every job: its task id, lease and whether it has finished."""
    return list(
        await conn.fetch(
            "SELECT model_id, ai_task_id, lease_owner, claimed_at, lease_expires_at, finished_at "
            "FROM listener.jobs"
        )
    )


async def wait_for_split(
    conn: asyncpg.Connection, rows: int, pids: dict[int, str], deadline: float
) -> list[asyncpg.Record]:
    """Waits until every row is claimed and submitted; returns the jobs."""
    while True:
        jobs = await jobs_by_row(conn)
        if len(jobs) == rows and all(j["ai_task_id"] and replica_of(j["lease_owner"], pids) for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise SystemExit("the rows were not all claimed and submitted in time")
        await asyncio.sleep(0.2)


async def wait_for_takeover(
    conn: asyncpg.Connection,
    simulator: RecordingSimulator,
    dead_rows: dict[Any, str],
    survivor_pid: int,
    killed_at: float,
    deadline: float,
) -> dict[Any, tuple[float, float]]:
    """Waits until the survivor has claimed and then polled every row of the dead replica;
    returns, per row, (its claim, its first poll after the claim) in seconds after the kill."""
    while True:
        claims = {
            r["model_id"]: r["claimed_at"].timestamp()
            for r in await conn.fetch(
                "SELECT model_id, lease_owner, claimed_at FROM listener.jobs "
                "WHERE model_id = any($1::uuid[])",
                list(dead_rows),
            )
            if replica_of(r["lease_owner"], {survivor_pid: "survivor"})
        }
        polls = (await simulator.record(killed_at))["polls_after"]
        taken: dict[Any, tuple[float, float]] = {}
        for model_id, claimed_at in claims.items():
            polled_at = min((t for t in polls.get(dead_rows[model_id], []) if t >= claimed_at), default=None)
            if polled_at is not None:
                taken[model_id] = (claimed_at - killed_at, polled_at - killed_at)
        if len(taken) == len(dead_rows):
            return taken
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the survivor took over {len(taken)} of {len(dead_rows)} rows before the deadline"
            )
        await asyncio.sleep(0.25)


def stored_task_ids_changed(before: list[asyncpg.Record], after: list[asyncpg.Record]) -> int:
    """Rows whose stored AI task id differs from the one stored before the kill."""
    earlier = {j["model_id"]: j["ai_task_id"] for j in before}
    return sum(1 for j in after if j["ai_task_id"] != earlier.get(j["model_id"]))


async def bench(rows: int, lease_s: float, poll_interval_s: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="listener-failover-bench-") as tmp:
        work = Path(tmp)
        with EmbeddedPostgres() as pg, LocalS3() as s3:
            conn = await asyncpg.connect(pg.dsn)
            try:
                await migrate(conn)
                async with recording_simulator(duration_s=_GENERATION_S, keep_produced=False) as simulator:
                    return await run_replicas(
                        conn, pg.dsn, s3, simulator, work, rows, lease_s, poll_interval_s
                    )
            finally:
                await conn.close()


async def run_replicas(
    conn: asyncpg.Connection,
    dsn: str,
    s3: LocalS3,
    simulator: RecordingSimulator,
    work: Path,
    rows: int,
    lease_s: float,
    poll_interval_s: float,
) -> dict[str, object]:
    """Starts the two replicas, shares the rows, kills one and measures the other's takeover."""

    def env(name: str) -> dict[str, str]:
        return listener_env(
            dsn,
            simulator.url,
            work / f"spool-{name}",
            s3.config(),
            LISTENER_POLL_INTERVAL=str(poll_interval_s),
            LISTENER_LEASE_SECONDS=str(lease_s),
            LISTENER_CONCURRENCY=str(rows),  # room for every row on either replica
            LISTENER_PER_USER_LIMIT=str(rows),
            LISTENER_GENERATION_TIMEOUT=str(_GENERATION_S),
        )

    env_a, env_b = env("a"), env("b")
    async with (
        listener_process(env_a, work / "replica-a.log") as replica_a,
        listener_process(env_b, work / "replica-b.log") as replica_b,
    ):
        await asyncio.gather(wait_until_ready(env_a), wait_until_ready(env_b))
        pids = {replica_a.pid: "a", replica_b.pid: "b"}
        started = time.monotonic()
        await insert_rows(conn, rows)
        before = await wait_for_split(conn, rows, pids, started + SETUP_TIMEOUT_S)
        split = {name: sum(1 for j in before if replica_of(j["lease_owner"], pids) == name) for name in "ab"}
        if min(split.values()) == 0:
            raise SystemExit(f"the rows were not split between the replicas: {split}")
        setup_s = time.monotonic() - started
        dead, survivor = (replica_a, replica_b) if split["a"] >= split["b"] else (replica_b, replica_a)
        dead_name = pids[dead.pid]
        dead_rows = {
            j["model_id"]: j["ai_task_id"] for j in before if replica_of(j["lease_owner"], pids) == dead_name
        }
        expiries = await conn.fetch(
            "SELECT lease_expires_at FROM listener.jobs WHERE model_id = any($1::uuid[])", list(dead_rows)
        )
        killed_at = time.time()
        dead.kill()
        await dead.wait()
        lease_left = [r["lease_expires_at"].timestamp() - killed_at for r in expiries]
        taken = await wait_for_takeover(
            conn, simulator, dead_rows, survivor.pid, killed_at, time.monotonic() + lease_s * 3 + 60
        )
        after = await jobs_by_row(conn)
        record = await simulator.record(time.time())
        if survivor.returncode is not None:
            raise SystemExit("the surviving replica exited")
    prompts = [prompt for prompt, _task_id, _at in record["submissions"]]
    claims = [claim for claim, _poll in taken.values()]
    polls = [poll for _claim, poll in taken.values()]
    target_s = lease_s + 5
    return {
        "rows": rows,
        "lease_s": lease_s,
        "poll_interval_s": poll_interval_s,
        "rows_per_replica": sorted(split.values(), reverse=True),
        "rows_of_killed_replica": len(dead_rows),
        "seconds_to_claim_and_submit_all": round(setup_s, 1),
        "lease_left_at_kill_s_min": round(min(lease_left), 2),
        "lease_left_at_kill_s_max": round(max(lease_left), 2),
        "claimed_again_s_p50": round(statistics.median(claims), 2),
        "claimed_again_s_max": round(max(claims), 2),
        "polled_again_s_p50": round(statistics.median(polls), 2),
        "polled_again_s_p99": round(percentile(polls, 0.99), 2),
        "takeover_s": round(max(polls), 2),
        "takeover_after_lease_ran_out_s": round(max(polls) - max(lease_left), 2),
        "takeover_target_s": target_s,
        "takeover_within_target": max(polls) <= target_s,
        "submissions": len(prompts),
        "repeated_submissions": len(prompts) - len(set(prompts)),
        "stored_task_ids_changed": stored_task_ids_changed(before, after),
        "rows_finished": sum(1 for j in after if j["finished_at"] is not None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--lease", type=float, default=10.0, help="LISTENER_LEASE_SECONDS")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="LISTENER_POLL_INTERVAL")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each from a fresh database")
    parser.add_argument("--quick", action="store_true", help="100 rows, a 5 s lease: for CI, under a minute")
    args = parser.parse_args()
    rows, lease_s = (100, 5.0) if args.quick else (args.rows, args.lease)
    runs = [asyncio.run(bench(rows, lease_s, args.poll_interval)) for _ in range(args.repeat)]
    print(json.dumps(with_spread(runs), indent=2))


if __name__ == "__main__":
    main()

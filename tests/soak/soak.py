"""The chaos soak: real `listener run` replicas, hundreds of rows, and everything around them failing.

    python -m tests.soak.soak            # 300 rows, three replicas, about seven minutes
    python -m tests.soak.soak --quick    # the CI's version: 60 rows, shorter outages, same chaos (~2 min)

Everything runs on this machine, on loopback: an embedded Postgres, the AI simulator, a local
S3, an FCM stand-in and a TCP proxy that can go silent. While owners insert, cancel and retry
rows, the soak SIGKILLs a random replica every few seconds and starts it again, restarts
Postgres twice and keeps it down once, terminates the listener's backends, leaves one replica
on a half-open link, makes the AI server refuse connections (as during its redeploy) and
fails some of its polls and generations, and answers 503 from Storage and FCM in bursts.
Then it checks that nothing was lost and nothing done twice, prints its figures as JSON and
exits 1 if a promise was broken. It bounds itself: every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import itertools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg

from listener.adapters.postgres.migrate import migrate
from listener.playground.embedded import EmbeddedPostgres, free_port
from listener.playground.local_env import local_env
from listener.playground.local_s3 import LocalS3
from listener.playground.sample_files import build_png
from listener.playground.simulator import FAIL_MARKER, AISimulator, SimulatorConfig
from tests.support.database import as_app_user
from tests.support.fake_fcm import FakeFcm
from tests.support.link_proxy import LinkProxy

T = TypeVar("T")
TERMINAL = ("completed", "failed", "cancelled")
SIMULATED_FAILURE = SimulatorConfig().failure_message
AI_AWAY_FAILURE = "The AI server was unreachable for 10 polls in a row."
# How soon a replica must notice a silent link: the LISTEN connection's check interval and
# its timeout (listener/adapters/postgres/listen.py's defaults), and a second for the soak's own probing.
LISTEN_CHECK_S = 10.0 + 5.0 + 1.0
# Once its link works again, how soon a replica must be ready: a connection attempt made while
# the link was silent gives up after 10 s (listener/adapters/postgres/jobs.py), then LISTEN reconnects.
RECOVERY_S = 25.0
# The soak's own record of what the listener did, written by triggers in the same transactions.
AUDIT_SQL = """
CREATE SCHEMA soak;
CREATE TABLE soak.audit (
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    model_id uuid NOT NULL,
    kind text NOT NULL,
    value text
);
CREATE FUNCTION soak.audit_job() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
    IF NEW.lease_owner IS DISTINCT FROM OLD.lease_owner THEN
        INSERT INTO soak.audit (model_id, kind, value) VALUES (NEW.model_id, 'lease', NEW.lease_owner);
    END IF;
    IF NEW.ai_task_id IS DISTINCT FROM OLD.ai_task_id THEN
        INSERT INTO soak.audit (model_id, kind, value) VALUES (NEW.model_id, 'task', NEW.ai_task_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER soak_audit AFTER UPDATE ON listener.jobs
    FOR EACH ROW EXECUTE FUNCTION soak.audit_job();
CREATE FUNCTION soak.audit_model() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO soak.audit (model_id, kind, value) VALUES (NEW.id, 'status', NEW.status);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER soak_audit AFTER INSERT OR UPDATE ON public.ai_generated_models
    FOR EACH ROW EXECUTE FUNCTION soak.audit_model();
"""


@dataclass(frozen=True)
class Plan:
    """How much work, how much chaos and when; offsets in seconds from the start."""

    name: str
    rows: int
    users: int
    insert_over_s: float
    lease_s: float
    kill_every_s: tuple[float, float]
    pg_restarts_at: tuple[float, ...]
    pg_down_at: float
    pg_down_s: float
    terminate_at: tuple[float, ...]
    half_open_at: float
    half_open_s: float
    ai_down_at: float
    ai_down_s: float
    bursts_every_s: float
    burst_s: float
    chaos_until_s: float
    settle_s: float
    replicas: int = 3
    generation_s: tuple[float, float] = (3.0, 9.0)
    fail_share: float = 0.08
    cancel_share: float = 0.08
    retry_share: float = 0.5  # of the rows that fail on purpose
    image_share: float = 0.3


FULL = Plan(
    name="full",
    rows=300,
    users=30,
    insert_over_s=330.0,
    lease_s=10.0,
    kill_every_s=(4.0, 8.0),
    pg_restarts_at=(20.0, 330.0),
    pg_down_at=250.0,
    pg_down_s=60.0,
    terminate_at=(35.0, 320.0),
    half_open_at=50.0,
    half_open_s=30.0,
    ai_down_at=110.0,
    ai_down_s=120.0,
    bursts_every_s=25.0,
    burst_s=4.0,
    chaos_until_s=345.0,
    settle_s=240.0,
)
QUICK = Plan(
    name="quick",
    rows=60,
    users=12,
    insert_over_s=62.0,
    lease_s=6.0,
    kill_every_s=(3.0, 6.0),
    pg_restarts_at=(8.0, 64.0),
    pg_down_at=50.0,
    pg_down_s=10.0,
    terminate_at=(14.0, 60.0),
    half_open_at=16.0,
    half_open_s=10.0,
    ai_down_at=32.0,
    ai_down_s=14.0,
    bursts_every_s=12.0,
    burst_s=2.5,
    chaos_until_s=68.0,
    settle_s=120.0,
)


@dataclass
class Row:
    """One request as its owner makes it, and what the owner did to it."""

    n: int
    model_id: uuid.UUID
    user_id: uuid.UUID
    kind: str
    fails: bool
    cancel_after_s: float | None
    retries: bool
    prompt: str
    inserted: bool = False
    cancelled: bool = False
    retried: bool = False


@dataclass
class Window:
    """A stretch of time (time.time()) during which something was broken on purpose."""

    kind: str
    start: float
    end: float = 0.0


@dataclass
class Tally:
    """What the chaos did, for the figures."""

    kills: list[tuple[float, int]] = field(default_factory=list)  # (when, pid)
    starts: int = 0
    pg_restarts: int = 0
    backends_terminated: int = 0
    storage_bursts: int = 0
    fcm_bursts: int = 0
    windows: list[Window] = field(default_factory=list)
    half_open: dict[str, float | None] = field(default_factory=dict)


class Admin:
    """The soak's own pool to Postgres; every call waits out restarts and outages (up to a deadline)."""

    RETRYABLE = (
        OSError,
        TimeoutError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        asyncpg.CrashShutdownError,
    )

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None

    async def call(self, fn: Callable[[Any], Awaitable[T]], limit_s: float = 180.0) -> T:
        deadline = time.monotonic() + limit_s
        while True:
            try:
                if self.pool is None:
                    self.pool = await asyncpg.create_pool(self.dsn, min_size=0, max_size=8, timeout=5)
                async with self.pool.acquire(timeout=10) as conn:
                    return await fn(conn)
            except self.RETRYABLE:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    async def close(self) -> None:
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), timeout=5)


class Replica:
    """One `listener run` process slot: killed and started again under the same settings."""

    def __init__(self, slot: int, env: dict[str, str], log_path: Path, spool: Path, http_port: int) -> None:
        self.slot = slot
        self.env = env
        self.log_path = log_path
        self.spool = spool
        self.http_port = http_port
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "listener", "run", env=self.env, stdout=log, stderr=log
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int | None:
        """SIGTERM, as an orchestrator stops it; the exit status (None if it had to be killed)."""
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout=45)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            return None

    async def readiness(self) -> tuple[int, str]:
        """The status of /readyz and its reason; (0, why) while it does not answer within 2 s."""
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(f"http://127.0.0.1:{self.http_port}/readyz") as answer,
            ):
                body = await answer.text()
                return answer.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, type(exc).__name__


class Soak:
    """The neighbours, the replicas, the owners and the chaos of one run."""

    def __init__(self, plan: Plan, seed: int, work: Path) -> None:
        self.plan = plan
        self.random = random.Random(seed)
        self.seed = seed
        self.work = work
        self.tally = Tally()
        self.pg = EmbeddedPostgres()
        self.s3 = LocalS3()
        self.simulator = AISimulator(
            SimulatorConfig(
                duration_s=plan.generation_s[0],
                duration_spread_s=plan.generation_s[1] - plan.generation_s[0],
                poll_failure_rate=0.10,
                file_ttl_after_serve_s=1.0,
            ),
            seed=seed,
        )
        self.fcm = FakeFcm()
        self.proxy: LinkProxy | None = None
        self.admin: Admin | None = None
        self.replicas: list[Replica] = []
        self.rows: list[Row] = []
        self.tokens: dict[uuid.UUID, tuple[list[str], list[str]]] = {}  # user: (active, inactive)
        self.started = 0.0
        self.chaos_over = asyncio.Event()
        self.unkillable: set[int] = set()
        self.unsettled: dict[str, Any] = {}
        self._rows_seen_by: dict[int, set[str]] = {}  # pid: model ids its log mentions
        self._push_ends: dict[tuple[int, str], list[float]] = {}  # (pid, model id): push_done times

    # -- setup ----------------------------------------------------------------------------

    async def set_up(self) -> None:
        await asyncio.to_thread(self.pg.start)
        conn = await asyncpg.connect(self.pg.dsn)
        try:
            await migrate(conn)
            await conn.execute(AUDIT_SQL)
        finally:
            await conn.close()
        self.admin = Admin(self.pg.dsn)
        storage = await asyncio.to_thread(self.s3.start)
        await self.simulator.start()
        await self.fcm.start()
        credentials = self.fcm.write_credentials(self.work / "firebase.json")
        self.proxy = LinkProxy(self.pg.port)
        await self.proxy.start()
        users = [uuid.uuid4() for _ in range(self.plan.users)]
        await self._add_tokens(users)
        self._plan_rows(users)
        for row in self.rows:
            if row.kind == "image_to_3d":
                self.s3.put_object(f"{row.user_id}/source-images/cat.png", build_png(row.user_id.bytes))
        for slot in range(self.plan.replicas):
            port = self.pg.port if slot else self.proxy.port  # replica 0 reaches Postgres through the proxy
            spool = self.work / f"spool-{slot}"
            http_port = free_port()
            env = local_env(
                f"postgresql://postgres@127.0.0.1:{port}/postgres",
                self.simulator.base_url,
                storage,
                spool,
                PATH=os.environ.get("PATH", "/usr/bin:/bin"),
                LISTENER_POLL_INTERVAL="0.5",
                LISTENER_PROGRESS_INTERVAL="1",
                LISTENER_LEASE_SECONDS=str(self.plan.lease_s),
                LISTENER_CONCURRENCY="200",
                LISTENER_PER_USER_LIMIT="20",
                LISTENER_HTTP_PORT=str(http_port),
                LISTENER_LOG_FORMAT="json",
                FIREBASE_CREDENTIALS=str(credentials),
                FCM_ENDPOINT=self.fcm.base_url,
            )
            self.replicas.append(Replica(slot, env, self.work / f"replica-{slot}.log", spool, http_port))

    async def _add_tokens(self, users: list[uuid.UUID]) -> None:
        assert self.admin is not None
        for user in users:
            active = [f"soak-{user.hex[:8]}-{k}-{uuid.uuid4().hex}" for k in range(2)]
            inactive = [f"soak-{user.hex[:8]}-off-{uuid.uuid4().hex}"]
            self.tokens[user] = (active, inactive)

            async def add(conn: asyncpg.Connection, user: uuid.UUID = user) -> None:
                active, inactive = self.tokens[user]
                for token, on in [(t, True) for t in active] + [(t, False) for t in inactive]:
                    await conn.execute(
                        "INSERT INTO public.user_device_tokens (user_id, device_token, platform, is_active) "
                        "VALUES ($1, $2, 'android', $3)",
                        user,
                        token,
                        on,
                    )

            await self.admin.call(add)

    def _plan_rows(self, users: list[uuid.UUID]) -> None:
        plan = self.plan
        for n in range(plan.rows):
            fails = self.random.random() < plan.fail_share
            cancels = not fails and self.random.random() < plan.cancel_share
            kind = "image_to_3d" if self.random.random() < plan.image_share else "text_to_3d"
            prompt = f"soak row {n}: a small wooden boat" + (f" {FAIL_MARKER}" if fails else "")
            self.rows.append(
                Row(
                    n=n,
                    model_id=uuid.uuid4(),
                    user_id=users[n % len(users)],
                    kind=kind,
                    fails=fails,
                    cancel_after_s=self.random.uniform(0.3, 8.0) if cancels else None,
                    retries=fails and self.random.random() < plan.retry_share,
                    prompt=prompt,
                )
            )

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        await self.set_up()
        self.started = time.time()
        for replica in self.replicas:
            await replica.start()
            self.tally.starts += 1
        owners = [asyncio.create_task(self._owner(row)) for row in self.rows]
        chaos = [
            asyncio.create_task(self._kills()),
            asyncio.create_task(self._events()),
            asyncio.create_task(self._storage_bursts()),
            asyncio.create_task(self._fcm_bursts()),
        ]
        try:
            await asyncio.wait_for(asyncio.gather(*chaos), timeout=self.plan.chaos_until_s + 240)
            self.chaos_over.set()
            settled = await self._settle(owners)
            exit_codes = [await replica.stop() for replica in self.replicas]
            return await self._figures(settled, exit_codes)
        finally:
            for task in owners + chaos:
                task.cancel()
            await asyncio.gather(*owners, *chaos, return_exceptions=True)

    async def tear_down(self) -> None:
        for replica in self.replicas:
            if replica.process is not None and replica.process.returncode is None:
                replica.process.kill()
                await replica.process.wait()
        if self.admin is not None:
            await self.admin.close()
        if self.proxy is not None:
            await self.proxy.stop()
        await self.fcm.stop()
        await self.simulator.stop()
        await asyncio.to_thread(self.s3.stop)
        await asyncio.to_thread(self.pg.stop)

    def _at(self, offset_s: float) -> float:
        return self.started + offset_s

    async def _sleep_until(self, offset_s: float) -> None:
        await asyncio.sleep(max(0.0, self._at(offset_s) - time.time()))

    # -- owners ---------------------------------------------------------------------------

    async def _owner(self, row: Row) -> None:
        assert self.admin is not None
        admin = self.admin
        await self._sleep_until(row.n * self.plan.insert_over_s / self.plan.rows)
        await self._insert(row)
        if row.cancel_after_s is not None:
            await asyncio.sleep(row.cancel_after_s)

            async def cancel(conn: asyncpg.Connection) -> bool:
                async with as_app_user(conn, row.user_id):
                    return (
                        await conn.fetchval(
                            "UPDATE public.ai_generated_models SET status = 'cancelled' "
                            "WHERE id = $1 AND status IN ('pending', 'processing') RETURNING true",
                            row.model_id,
                        )
                        is not None
                    )

            row.cancelled = await admin.call(cancel)
        if row.retries:
            await self._retry_when_told(row)

    async def _insert(self, row: Row) -> None:
        assert self.admin is not None

        async def insert(conn: asyncpg.Connection) -> None:
            async with as_app_user(conn, row.user_id):
                await conn.execute(
                    "INSERT INTO public.ai_generated_models "
                    "(id, user_id, generation_type, prompt, source_image_url, model_name, storage_path, "
                    "status) "
                    "VALUES ($1, $2, $3, $4, $5, $6, '', 'pending')",
                    row.model_id,
                    row.user_id,
                    row.kind,
                    row.prompt,
                    f"{row.user_id}/source-images/cat.png" if row.kind == "image_to_3d" else None,
                    f"Soak {row.n}",
                )

        deadline = time.monotonic() + self.plan.chaos_until_s + 120
        while not row.inserted:
            try:
                await self.admin.call(insert)
                row.inserted = True
            except asyncpg.UniqueViolationError:
                row.inserted = True  # an earlier try committed; its answer was lost
            except asyncpg.CheckViolationError:
                # The owner has the most unfinished rows the app allows: they wait, as a person would.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1.0)

    async def _retry_when_told(self, row: Row) -> None:
        """Sets a failed row back to pending once its owner was told it failed, with the prompt fixed."""
        assert self.admin is not None
        deadline = time.monotonic() + self.plan.chaos_until_s + self.plan.settle_s
        while time.monotonic() < deadline:
            told = await self.admin.call(
                lambda conn: conn.fetchval(
                    "SELECT m.status = 'failed' AND j.push_sent_at IS NOT NULL "
                    "FROM public.ai_generated_models m JOIN listener.jobs j ON j.model_id = m.id "
                    "WHERE m.id = $1",
                    row.model_id,
                )
            )
            if told:
                break
            await asyncio.sleep(0.5)
        else:
            return

        async def retry(conn: asyncpg.Connection) -> bool:
            async with as_app_user(conn, row.user_id):
                return (
                    await conn.fetchval(
                        "UPDATE public.ai_generated_models SET status = 'pending', prompt = $2 "
                        "WHERE id = $1 AND status = 'failed' RETURNING true",
                        row.model_id,
                        row.prompt.replace(f" {FAIL_MARKER}", ""),
                    )
                    is not None
                )

        row.retried = await self.admin.call(retry)

    # -- chaos ----------------------------------------------------------------------------

    async def _kills(self) -> None:
        """SIGKILLs a random replica every few seconds and starts it again at once."""
        await asyncio.sleep(self.random.uniform(*self.plan.kill_every_s))
        while time.time() < self._at(self.plan.chaos_until_s):
            candidates = [r for r in self.replicas if r.slot not in self.unkillable]
            replica = self.random.choice(candidates)
            self.tally.kills.append((time.time(), replica.pid))
            await replica.kill()
            await replica.start()
            self.tally.starts += 1
            await asyncio.sleep(self.random.uniform(*self.plan.kill_every_s))

    async def _events(self) -> None:
        plan = self.plan
        events: list[tuple[float, Callable[[], Coroutine[Any, Any, None]]]] = [
            *[(at, self._pg_restart) for at in plan.pg_restarts_at],
            (plan.pg_down_at, self._pg_down),
            *[(at, self._terminate_backends) for at in plan.terminate_at],
            (plan.half_open_at, self._half_open),
            (plan.ai_down_at, self._ai_down),
        ]
        running: list[asyncio.Task[None]] = []
        for at, event in sorted(events, key=lambda e: e[0]):
            await self._sleep_until(at)
            running.append(asyncio.create_task(event()))
        await asyncio.gather(*running)

    async def _pg_restart(self) -> None:
        window = Window("postgres_restart", time.time())
        await asyncio.to_thread(self.pg.restart, "fast")
        window.end = time.time()
        self.tally.windows.append(window)
        self.tally.pg_restarts += 1

    async def _pg_down(self) -> None:
        window = Window("postgres_down", time.time())
        await asyncio.to_thread(self.pg.shut_down, "fast")
        await asyncio.sleep(self.plan.pg_down_s)
        await asyncio.to_thread(self.pg.start_again)
        window.end = time.time()
        self.tally.windows.append(window)

    async def _terminate_backends(self) -> None:
        assert self.admin is not None
        count = await self.admin.call(
            lambda conn: conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name IN ('listener', 'listener-listen')"
            )
        )
        self.tally.backends_terminated += int(count)

    async def _ai_down(self) -> None:
        """The AI server refuses connections, as during its own redeploy, then comes back."""
        port = int(self.simulator.base_url.rsplit(":", 1)[1])
        window = Window("ai_server_down", time.time())
        await self.simulator.stop()
        await asyncio.sleep(self.plan.ai_down_s)
        await self.simulator.start(port=port)
        window.end = time.time()
        self.tally.windows.append(window)

    async def _half_open(self) -> None:
        """Replica 0's link to Postgres goes silent; it must notice, and recover once a link works."""
        assert self.proxy is not None
        replica = self.replicas[0]
        self.unkillable.add(0)
        try:
            window = Window("half_open", time.time())
            self.proxy.stall()
            noticed = await self._wait_ready(replica, ready=False, limit_s=self.plan.half_open_s + 60)
            self.tally.half_open["noticed_s"] = None if noticed is None else round(noticed - window.start, 2)
            await asyncio.sleep(max(0.0, window.start + self.plan.half_open_s - time.time()))
            self.proxy.resume()
            window.end = time.time()
            self.tally.windows.append(window)
            recovered = await self._wait_recovered(replica, window.end, limit_s=120)
            self.tally.half_open["recovered_s"] = (
                None if recovered is None else round(recovered - window.end, 2)
            )
        finally:
            self.unkillable.discard(0)

    async def _wait_ready(self, replica: Replica, *, ready: bool, limit_s: float) -> float | None:
        deadline = time.time() + limit_s
        while time.time() < deadline:
            status, _ = await replica.readiness()
            if (status == 200) == ready and status != 0:
                return time.time()
            await asyncio.sleep(0.2)
        return None

    async def _wait_recovered(self, replica: Replica, since: float, limit_s: float) -> float | None:
        """When the replica is ready again: LISTEN registered anew, and its pool answering."""
        deadline = time.time() + limit_s
        while time.time() < deadline:
            status, _ = await replica.readiness()
            if status == 200:
                return time.time()
            await asyncio.sleep(0.2)
        return None

    async def _storage_bursts(self) -> None:
        while True:
            await asyncio.sleep(self.plan.bursts_every_s * self.random.uniform(0.6, 1.4))
            if time.time() > self._at(self.plan.chaos_until_s):
                return
            self.s3.fail_requests(503, methods=("PUT", "POST"))
            self.tally.storage_bursts += 1
            await asyncio.sleep(self.plan.burst_s)
            self.s3.stop_failing()

    async def _fcm_bursts(self) -> None:
        await asyncio.sleep(self.plan.bursts_every_s / 2)
        while True:
            await asyncio.sleep(self.plan.bursts_every_s * self.random.uniform(0.6, 1.4))
            if time.time() > self._at(self.plan.chaos_until_s):
                return
            self.fcm.down = True
            self.tally.fcm_bursts += 1
            await asyncio.sleep(self.plan.burst_s)
            self.fcm.down = False

    # -- the end --------------------------------------------------------------------------

    async def _settle(self, owners: list[asyncio.Task[None]]) -> bool:
        """Waits until the owners are done, every row is terminal and every finished row was told."""
        assert self.admin is not None
        deadline = time.monotonic() + self.plan.settle_s
        while True:
            owners_done = all(task.done() for task in owners)
            if owners_done:
                for task in owners:
                    task.result()  # an owner that crashed is the soak's own failure
            waiting = await self.admin.call(
                lambda conn: conn.fetch(
                    "SELECT m.id, m.status, j.outcome, j.push_sent_at IS NOT NULL AS told "
                    "FROM public.ai_generated_models m LEFT JOIN listener.jobs j ON j.model_id = m.id "
                    "WHERE m.status NOT IN ('completed', 'failed', 'cancelled') "
                    "   OR (j.outcome IN ('completed', 'failed') AND j.push_sent_at IS NULL)"
                )
            )
            if owners_done and not waiting:
                return True
            if time.monotonic() > deadline:
                number = {row.model_id: row.n for row in self.rows}
                self.unsettled = {
                    "owners_busy": [
                        row.n for row, task in zip(self.rows, owners, strict=True) if not task.done()
                    ],
                    "rows": {number.get(r["id"], -1): (r["status"], r["told"]) for r in waiting},
                }
                return False
            await asyncio.sleep(1.0)

    async def _figures(self, settled: bool, exit_codes: list[int | None]) -> dict[str, Any]:
        assert self.admin is not None
        broken: list[str] = []
        models = {
            r["id"]: r
            for r in await self.admin.call(
                lambda conn: conn.fetch(
                    "SELECT m.id, m.status, m.error_message, "
                    "m.generation_metadata->>'ai_task_id' AS task_id, "
                    "j.lease_owner, j.push_result, j.attempts FROM public.ai_generated_models m "
                    "LEFT JOIN listener.jobs j ON j.model_id = m.id"
                )
            )
        }
        audit = await self.admin.call(
            lambda conn: conn.fetch(
                "SELECT extract(epoch FROM at)::float8 AS at, model_id, kind, value "
                "FROM soak.audit ORDER BY seq"
            )
        )
        events: dict[uuid.UUID, list[asyncpg.Record]] = collections.defaultdict(list)
        for event in audit:
            events[event["model_id"]].append(event)
        statuses = collections.Counter(r["status"] for r in models.values())
        not_terminal = [str(k) for k, r in models.items() if r["status"] not in TERMINAL]
        if not settled:
            broken.append(f"rows did not all end and get told within the settle time: {self.unsettled}")
        if not_terminal:
            broken.append(f"{len(not_terminal)} rows not terminal: {not_terminal[:5]}")
        missing = [row.n for row in self.rows if row.model_id not in models]
        if missing:
            broken.append(f"rows never inserted: {missing[:5]}")
        leases = sum(1 for r in models.values() if r["lease_owner"] is not None)
        if leases:
            broken.append(f"{leases} leases still held after every replica stopped")

        unexpected = self._unexpected_failures(models, events)
        broken += [f"row {n} failed unexpectedly: {reason}" for n, reason in unexpected]

        submissions = self._submissions(events)
        if submissions["after_task_id_stored"]:
            broken.append(f"{submissions['after_task_id_stored']} submissions after the task id was stored")
        unexplained = submissions["repeated_in_window"] - submissions["repeated_because_killed_in_window"]
        if unexplained:
            broken.append(f"{unexplained} submissions repeated between submitting and storing the task id")

        logs = self._log_events()
        told = self._told(events)
        notifications = await self._notifications(told)
        pushes = self._pushes(told)
        pushes_unexplained = pushes["duplicates"] - pushes["duplicates_because_killed_in_window"]
        for name, figures in (
            ("notification", notifications),
            ("push", {**pushes, "duplicates": pushes_unexplained}),
        ):
            for problem in ("duplicates", "missing", "to_inactive_tokens"):
                if figures.get(problem):
                    broken.append(f"{name} {problem}: {figures[problem]}")

        objects = await asyncio.to_thread(self._objects, models)
        for problem in ("mismatched", "missing", "for_rows_not_completed"):
            if objects[problem]:
                broken.append(f"objects {problem}: {objects[problem]}")

        spool_left = sum(
            1 for r in self.replicas if r.spool.exists() for p in r.spool.rglob("*") if p.is_file()
        )
        if spool_left:
            broken.append(f"{spool_left} spool files left")
        if any(code != 0 for code in exit_codes):
            broken.append(f"replicas did not stop cleanly on SIGTERM: {exit_codes}")

        takeover = self._takeovers(events)
        bound = self.plan.lease_s + 5.0
        if takeover["longest_wait_s"] is not None and takeover["longest_wait_s"] > bound:
            broken.append(f"a row waited {takeover['longest_wait_s']} s for a replica after its owner died")
        half_open = self.tally.half_open
        if half_open.get("noticed_s") is None or float(half_open["noticed_s"] or 0) > LISTEN_CHECK_S:
            broken.append(f"the half-open replica was not noticed within {LISTEN_CHECK_S} s: {half_open}")
        if half_open.get("recovered_s") is None or float(half_open["recovered_s"] or 0) > RECOVERY_S:
            broken.append(f"the half-open replica did not recover within {RECOVERY_S} s: {half_open}")

        if logs.get("job_crashed"):
            broken.append(f"{logs['job_crashed']} rows met an unexpected error in the listener")
        windows = {
            w.kind: round(w.end - w.start, 1) for w in self.tally.windows if w.kind != "postgres_restart"
        }
        return {
            "mode": self.plan.name,
            "seed": self.seed,
            "wall_s": round(time.time() - self.started, 1),
            "rows": len(self.rows),
            "users": self.plan.users,
            "replicas": self.plan.replicas,
            "statuses": dict(statuses),
            "failures": dict(
                collections.Counter(r["error_message"] for r in models.values() if r["status"] == "failed")
            ),
            "owner_cancels": sum(r.cancelled for r in self.rows),
            "owner_retries": sum(r.retried for r in self.rows),
            "chaos": {
                "replica_kills": len(self.tally.kills),
                "replica_starts": self.tally.starts,
                "postgres_restarts": self.tally.pg_restarts,
                "postgres_down_s": windows.get("postgres_down"),
                "backends_terminated": self.tally.backends_terminated,
                "half_open_s": windows.get("half_open"),
                "ai_server_refusing_s": windows.get("ai_server_down"),
                "ai_polls": sum(self.simulator.polls.values()),
                "storage_503_bursts": self.tally.storage_bursts,
                "storage_503_answers": self.s3.failed_requests,
                "fcm_503_bursts": self.tally.fcm_bursts,
                "fcm_503_answers": sum(1 for r in self.fcm.requests if r.status == 503),
            },
            "half_open": {**half_open, "notice_bound_s": LISTEN_CHECK_S, "recovery_bound_s": RECOVERY_S},
            "submissions": submissions,
            "takeovers": {**takeover, "bound_s": bound},
            "notifications": notifications,
            "pushes": pushes,
            "objects": objects,
            "spool_files_left": spool_left,
            "leases_held": leases,
            "stuck_processing": statuses.get("processing", 0),
            "unexpected_failures": len(unexpected),
            "listener_events": logs,
            "broken": broken,
        }

    def _windows(self, kind: str) -> list[Window]:
        return [w for w in self.tally.windows if w.kind == kind]

    def _unexpected_failures(
        self, models: dict[uuid.UUID, asyncpg.Record], events: dict[uuid.UUID, list[asyncpg.Record]]
    ) -> list[tuple[int, str]]:
        """Failed rows other than those failed on purpose, or polled while the AI server was away."""
        found = []
        ai_down = self._windows("ai_server_down")
        for row in self.rows:
            model = models.get(row.model_id)
            if model is None or model["status"] != "failed":
                continue
            reason = model["error_message"] or ""
            if row.fails and not row.retried and reason == SIMULATED_FAILURE:
                continue
            if reason == AI_AWAY_FAILURE and any(
                self._submitted_before(events[row.model_id], w.start) for w in ai_down
            ):
                continue  # it was being polled when the server went away: 10 failed polls fail it
            found.append((row.n, reason))
        return found

    @staticmethod
    def _submitted_before(events: list[asyncpg.Record], when: float) -> bool:
        """True when the row's last round had its task id stored before `when`."""
        stored = None
        for event in events:
            if event["kind"] == "status" and event["value"] == "pending":
                stored = None
            elif event["kind"] == "task" and event["value"] is not None and stored is None:
                stored = event["at"]
        return stored is not None and stored < when

    def _rounds(self, events: list[asyncpg.Record]) -> list[tuple[float, float, float | None]]:
        """Each round of a row (insert, then each owner retry): (start, end, task id stored at)."""
        rounds: list[list[Any]] = []
        for event in events:
            if event["kind"] == "status" and event["value"] == "pending":
                if rounds:
                    rounds[-1][1] = event["at"]
                rounds.append([event["at"], float("inf"), None])
            elif event["kind"] == "task" and event["value"] is not None and rounds and rounds[-1][2] is None:
                rounds[-1][2] = event["at"]
        return [(start, end, stored) for start, end, stored in rounds]

    def _submissions(self, events: dict[uuid.UUID, list[asyncpg.Record]]) -> dict[str, int]:
        """Submissions per row and round: more than one is a repeat; one after the id was stored, a breach.

        A repeat is explained when the replica that held the row as it submitted was SIGKILLed
        before it could store the task id (a database away makes that stretch as long as the
        outage): the one window no listener can close alone, as the AI server takes no
        idempotency key. Any other repeat is a broken promise.
        """
        by_row: dict[int, list[float]] = collections.defaultdict(list)
        for submission in self.simulator.submissions:
            prompt = str(submission.fields.get("prompt", ""))
            n = int(prompt.split(":", 1)[0].removeprefix("soak row "))
            by_row[n].append(submission.received_at)
        kills = collections.defaultdict(list)
        for killed_at, pid in self.tally.kills:
            kills[pid].append(killed_at)
        repeated = killed = after_stored = 0
        for row in self.rows:
            row_events = events[row.model_id]
            for start, end, stored in self._rounds(row_events):
                times = sorted(t for t in by_row[row.n] if start - 0.5 <= t < end)
                for earlier, later in itertools.pairwise(times):
                    if stored is not None and later > stored + 0.05:
                        after_stored += 1
                        continue
                    repeated += 1
                    holder = _holder_at(row_events, earlier)
                    pid = int(holder.split(":")[-2]) if holder and holder.count(":") >= 2 else -1
                    if any(earlier - 1.0 <= at <= later for at in kills.get(pid, [])):
                        killed += 1
        return {
            "total": len(self.simulator.submissions),
            "repeated_in_window": repeated,
            "repeated_because_killed_in_window": killed,
            "after_task_id_stored": after_stored,
        }

    def _told(self, events: dict[uuid.UUID, list[asyncpg.Record]]) -> dict[uuid.UUID, int]:
        """How many times each row reached completed or failed: each must be told once."""
        return {
            row.model_id: sum(
                1
                for e in events[row.model_id]
                if e["kind"] == "status" and e["value"] in ("completed", "failed")
            )
            for row in self.rows
        }

    async def _notifications(self, told: dict[uuid.UUID, int]) -> dict[str, int]:
        assert self.admin is not None
        rows = await self.admin.call(
            lambda conn: conn.fetch(
                "SELECT related_id, count(*) AS n FROM public.notifications GROUP BY related_id"
            )
        )
        written = {uuid.UUID(r["related_id"]): int(r["n"]) for r in rows}
        return _compare(told, written)

    def _pushes(self, told: dict[uuid.UUID, int]) -> dict[str, int]:
        """One push per active token per told end; none to inactive tokens.

        A second push is explained when the replica that sent the first was SIGKILLed right
        after FCM took it, before the push's end was written: the window the notifier leaves,
        in which the device replaces the first message with the second (same collapse id).
        """
        delivered: dict[tuple[uuid.UUID, str], list[float]] = collections.defaultdict(list)
        for request in self.fcm.delivered:
            message = request.body["message"]
            delivered[(uuid.UUID(message["data"]["related_id"]), message["token"])].append(
                request.received_at
            )
        expected: dict[tuple[uuid.UUID, str], int] = {}
        inactive = killed = 0
        for row in self.rows:
            active, off = self.tokens[row.user_id]
            for token in active:
                key = (row.model_id, token)
                expected[key] = told[row.model_id]
                times = sorted(delivered.get(key, []))
                for earlier, later in itertools.pairwise(times[max(0, told[row.model_id] - 1) :]):
                    killed += self._killed_while_pushing(row.model_id, earlier, later)
            inactive += sum(len(delivered.get((row.model_id, token), [])) for token in off)
        figures = _compare(expected, {key: len(times) for key, times in delivered.items()})
        figures["duplicates_because_killed_in_window"] = killed
        figures["to_inactive_tokens"] = inactive
        return figures

    def _killed_while_pushing(self, model_id: uuid.UUID, sent_at: float, again_at: float) -> bool:
        """True when a replica working on the row was SIGKILLed after FCM took a push and before
        it wrote the push's end (a database away makes that stretch as long as the outage)."""
        row = str(model_id)
        for killed_at, pid in self.tally.kills:
            if not sent_at - 0.2 <= killed_at <= again_at or row not in self._rows_seen_by.get(pid, set()):
                continue
            if not any(sent_at - 1.0 <= at <= killed_at for at in self._push_ends.get((pid, row), [])):
                return True
        return False

    def _objects(self, models: dict[uuid.UUID, asyncpg.Record]) -> dict[str, int]:
        """Every object of a completed row is the simulator's bytes; no other row left any."""
        checked = mismatched = missing = stray = 0
        keys = set(self.s3.keys())
        rows = {row.model_id: row for row in self.rows}
        for key in keys:
            if "/source-images/" in key:
                continue
            model_id = uuid.UUID(key.rsplit("/", 1)[1].split(".")[0])
            model = models.get(model_id)
            if model is None or model["status"] != "completed":
                stray += 1
        for model_id, row in rows.items():
            model = models.get(model_id)
            if model is None or model["status"] != "completed":
                continue
            produced = self.simulator.produced.get(model["task_id"] or "", {})
            for kind, key in (
                ("glb", f"{row.user_id}/generated-models/{model_id}.glb"),
                ("stl", f"{row.user_id}/generated-models/{model_id}.stl"),
                ("thumbnail", f"{row.user_id}/thumbnails/{model_id}.png"),
            ):
                checked += 1
                if key not in keys or kind not in produced:
                    missing += 1
                elif self.s3.read_object(key) != produced[kind]:
                    mismatched += 1
        return {
            "checked": checked,
            "mismatched": mismatched,
            "missing": missing,
            "for_rows_not_completed": stray,
        }

    def _takeovers(self, events: dict[uuid.UUID, list[asyncpg.Record]]) -> dict[str, Any]:
        """For each row whose replica was killed while it held the row: how long until another took it.

        Time during which no replica could claim (Postgres down or restarting, the AI server
        away: claims pause) does not count as waiting for a replica.
        """
        blocked = [
            (w.start, w.end + 2.0)
            for w in self.tally.windows
            if w.kind in ("postgres_down", "postgres_restart", "ai_server_down")
        ]
        waits: list[float] = []
        raw: list[float] = []
        for killed_at, pid in self.tally.kills:
            marker = f":{pid}:"
            for model_events in events.values():
                holder, finished = None, False
                for event in model_events:
                    if event["at"] > killed_at:
                        break
                    if event["kind"] == "lease":
                        holder = event["value"]
                    elif event["kind"] == "status":
                        finished = event["value"] in TERMINAL
                if holder is None or marker not in holder or finished:
                    continue
                after = [e for e in model_events if e["at"] > killed_at]
                for event in after:
                    if event["kind"] == "status" and event["value"] in TERMINAL:
                        break  # ended (cancelled) before anyone had to take it
                    if event["kind"] == "lease" and event["value"] and marker not in event["value"]:
                        wait = event["at"] - killed_at
                        raw.append(wait)
                        waits.append(wait - _overlap(killed_at, event["at"], blocked))
                        break
        return {
            "rows_orphaned_by_kills": len(waits),
            "longest_wait_s": round(max(waits), 2) if waits else None,
            "longest_wait_raw_s": round(max(raw), 2) if raw else None,
        }

    def _log_events(self) -> dict[str, int]:
        wanted = {
            "job_crashed",
            "loop_ended",
            "job_lost",
            "job_released_database_unavailable",
            "job_released_ai_server_unreachable",
            "job_reclaimed_while_running",
            "job_given_up",
            "database_connections_refused",
            "push_failed",
            "push_timed_out",
        }
        counts: collections.Counter[str] = collections.Counter()
        for replica in self.replicas:
            if not replica.log_path.exists():
                continue
            pid = -1
            for line in replica.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    record = json.loads(line)
                    event = record.get("event")
                    if event == "listener_starting":
                        pid = int(str(record["owner"]).split(":")[-2])
                    if "model_id" in record:
                        self._rows_seen_by.setdefault(pid, set()).add(record["model_id"])
                    if event == "push_done":
                        at = datetime.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
                        self._push_ends.setdefault((pid, record["model_id"]), []).append(at)
                    if event in wanted:
                        counts[event] += 1
        return dict(counts)


def _holder_at(events: list[asyncpg.Record], when: float) -> str | None:
    """Who held the row's lease at `when`, from the audit."""
    holder = None
    for event in events:
        if event["at"] > when:
            break
        if event["kind"] == "lease":
            holder = event["value"]
    return holder


def _compare(expected: dict[Any, int], actual: dict[Any, int]) -> dict[str, int]:
    duplicates = sum(max(0, actual.get(k, 0) - n) for k, n in expected.items())
    missing = sum(max(0, n - actual.get(k, 0)) for k, n in expected.items())
    unexpected = sum(n for k, n in actual.items() if k not in expected)
    return {
        "expected": sum(expected.values()),
        "delivered": sum(actual.values()),
        "duplicates": duplicates + unexpected,
        "missing": missing,
    }


def _overlap(start: float, end: float, windows: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(end, w_end) - max(start, w_start)) for w_start, w_end in windows)


async def soak(plan: Plan, seed: int, keep: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix=f"listener-soak-{plan.name}-"))
    run = Soak(plan, seed, work)
    figures: dict[str, Any] | None = None
    try:
        limit = plan.chaos_until_s + plan.settle_s + 600
        figures = await asyncio.wait_for(run.run(), timeout=limit)
    finally:
        await run.tear_down()
        if figures is None or figures["broken"] or keep:
            print(f"soak: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, indent=2, default=str))
    return 1 if figures["broken"] else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the CI's version, about two minutes")
    parser.add_argument("--seed", type=int, help="fixes the rows and the chaos (random by default)")
    parser.add_argument("--keep", action="store_true", help="keep the replicas' logs even when all is well")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    sys.exit(asyncio.run(soak(QUICK if args.quick else FULL, seed, args.keep)))


if __name__ == "__main__":
    main()

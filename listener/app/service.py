"""`listener run`: wires the real clients together and serves until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp

from listener.adapters.ai_server.client import AIClient
from listener.adapters.ai_server.watch import AIServerWatch
from listener.adapters.fcm import FcmSender
from listener.adapters.postgres.jobs import PgJobStore
from listener.adapters.postgres.listen import PgListener
from listener.adapters.postgres.pool import PgPool, is_transaction_pooler
from listener.adapters.postgres.push_store import PushStore
from listener.adapters.source_images import SourceImageFetcher
from listener.adapters.storage.s3 import Storage
from listener.adapters.storage.watch import CHECK_WHILE_BROKEN_S, StorageWatch
from listener.app.dashboard.routes import dashboard_routes
from listener.app.health import HealthServer
from listener.app.settings import Settings
from listener.core.generation import run_job
from listener.core.ports import GenerationSettings, RowDependencies
from listener.core.reachability import Reachability
from listener.core.spool import SpoolBudget
from listener.core.storage_state import StorageState
from listener.core.supervisor import Supervisor, SupervisorSettings
from listener.errors import DatabaseUnavailable
from listener.metrics import Metrics
from listener.notify.notifier import Notifier, PushNotifier
from listener.redact import redact_url
from listener.retry import RetryPolicy

log = logging.getLogger(__name__)

# Waiting for a free connection of the pool is not timed (a burst of rows only queues);
# making a connection is, and so is every read (the first poll after success can be slow).
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=10, sock_read=180)


def replica_name() -> str:
    """A lease owner name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def clear_spool(spool_dir: Path) -> None:
    """Removes files a previous process left behind: no job of this process is there yet."""
    if spool_dir.is_dir():
        for child in spool_dir.iterdir():
            shutil.rmtree(child, ignore_errors=True)
    spool_dir.mkdir(parents=True, exist_ok=True)


async def wait_for_database(db: PgPool, stop: asyncio.Event) -> bool:
    """True once the database answers; False if told to stop first. A database that is down is waited for."""
    delay = 0.5
    while not stop.is_set():
        try:
            await db.ping()
            return True
        except DatabaseUnavailable as exc:
            log.warning("database_unavailable", extra={"error": str(exc), "retry_in_s": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 15.0)
    return False


class Readiness:
    """Why this replica is not ready yet, for `/readyz`; None once it is."""

    def __init__(self, storage_state: StorageState, ai_state: Reachability, bucket: str) -> None:
        self.pg: PgPool | None = None
        self.supervisor: Supervisor | None = None
        self.storage_state = storage_state
        self.ai_state = ai_state
        self.bucket = bucket

    async def not_ready_reason(self) -> str | None:
        """Ready means: started, LISTEN registered, the pool reaching the database, Storage usable."""
        if self.pg is None or self.supervisor is None:
            return "starting: waiting for the database"
        if not self.supervisor.wake_ups.ready:
            return "the LISTEN connection is down"
        if not self.supervisor.healthy:
            return "a background loop of the listener has stopped"
        try:
            await self.pg.ping()
        except DatabaseUnavailable:
            return "the database does not answer"
        if not self.storage_state.usable:
            return f"Storage cannot take uploads to the bucket {self.bucket}: {self.storage_state.problem}"
        if not self.ai_state.usable:
            return f"claims wait: {self.ai_state.problem}"
        return None


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    notifier: Notifier | None = None,
    retry: RetryPolicy | None = None,
    sweep_interval_s: float = 5.0,
    storage_recheck_s: float = CHECK_WHILE_BROKEN_S,
    on_started: Callable[[], None] | None = None,
) -> Supervisor | None:
    """Runs the listener until `stop` is set; returns the stopped supervisor (None if it never started)."""
    owner = replica_name()
    log.info(
        "listener_starting",
        extra={
            "owner": owner,
            "database": redact_url(settings.database_url),
            "ai_url": redact_url(settings.ai_url),
        },
    )
    if is_transaction_pooler(settings.database_url):
        log.warning(
            "database_url_is_transaction_pooler",
            extra={"hint": "LISTEN does not work on port 6543; use the direct or session-mode URL"},
        )
    clear_spool(settings.spool_dir)
    metrics = Metrics()
    retry = retry or RetryPolicy()
    storage_state, ai_state = StorageState(), Reachability()
    readiness = Readiness(storage_state, ai_state, settings.storage.bucket)
    # Health first: /healthz answers from the first second, /readyz says what is awaited.
    health = HealthServer(
        settings.http_host,
        settings.http_port,
        metrics,
        readiness.not_ready_reason,
        # The dashboard, when its token is set, on the same port; it reads through the pool once open.
        on_app=dashboard_routes(
            settings.dashboard_token,
            lambda: readiness.pg,
            owner=owner,
            lease_s=settings.lease_s,
            allow_http=settings.dashboard_allow_http,
        ),
    )
    await health.start()
    try:
        async with (
            PgPool.connect(settings.database_url, max_size=settings.db_pool_size) as pg,
            aiohttp.ClientSession(timeout=HTTP_TIMEOUT, connector=aiohttp.TCPConnector(limit=256)) as http,
            aiohttp.ClientSession(
                timeout=HTTP_TIMEOUT, connector=aiohttp.TCPConnector(limit=64, force_close=True)
            ) as submit_http,
            Storage(settings.storage) as storage,
            SourceImageFetcher() as source_images,
        ):
            if not await wait_for_database(pg, stop):
                log.info("listener_stopped_before_start")
                return None
            db = PgJobStore(pg)
            await _warn_if_realtime_is_off(pg)
            ai_watch = AIServerWatch(settings.ai_url, ai_state, metrics)
            await ai_watch.check()
            watch = StorageWatch(
                storage, pg, settings.storage.bucket, storage_state, metrics, recheck_s=storage_recheck_s
            )
            with contextlib.suppress(Exception):  # the watch logs its own trouble when it runs
                await watch.check_once()  # rows that finish before the first check know where they stand
            sender = _push_sender(settings)
            if notifier is None:
                push = PushNotifier(PushStore(pg), sender, settings.push_texts, retry, metrics=metrics)
                await push.start()
                notifier = push
            clients = RowDependencies(
                db=db,
                ai=AIClient(settings.ai_url, http, submit_http, result_origins=settings.result_origins),
                storage=storage,
                fetch_url=source_images.fetch,
                metrics=metrics,
                spool=SpoolBudget(settings.spool_max_bytes),
                storage_state=storage_state,
                ai_state=ai_state,
            )
            supervisor = Supervisor(
                db,
                PgListener(settings.database_url, on_silent=pg.drop_connections),
                _supervisor_settings(settings, owner, sweep_interval_s),
                run_job=functools.partial(
                    run_job, clients=clients, settings=_generation_settings(settings, owner, retry)
                ),
                notify=notifier.model_finished,
                metrics=metrics,
                claim_gate=ai_state,
            )
            await supervisor.start()
            readiness.pg, readiness.supervisor = pg, supervisor
            background = [
                asyncio.create_task(watch.run(), name="storage-watch"),
                asyncio.create_task(ai_watch.run(), name="ai-server-watch"),
            ]
            if isinstance(notifier, PushNotifier):
                background.append(asyncio.create_task(notifier.sweep_forever(), name="push-sweep"))
            if on_started is not None:
                on_started()
            log.info(
                "listener_started",
                extra={"concurrency": settings.concurrency, "http_port": settings.http_port},
            )
            try:
                await stop.wait()
            finally:
                log.info("listener_stopping", extra={"in_flight": len(supervisor.running)})
                for task in background:
                    task.cancel()
                await supervisor.stop()
                if sender is not None:
                    await sender.aclose()
        return supervisor
    finally:
        await health.stop()
        log.info("listener_stopped")


async def _warn_if_realtime_is_off(pg: PgPool) -> None:
    """Says once, at start, when Supabase Realtime would not stream the rows' progress."""
    try:
        problem = await pg.fetchval("realtime_problem")
    except DatabaseUnavailable:
        return
    if problem:
        log.warning(
            "realtime_not_streaming",
            extra={"problem": problem, "hint": "apps see progress only when they read the row again"},
        )


def _supervisor_settings(settings: Settings, owner: str, sweep_interval_s: float) -> SupervisorSettings:
    """Who this replica is and how much it takes on."""
    return SupervisorSettings(
        owner=owner,
        concurrency=settings.concurrency,
        per_user_limit=settings.per_user_limit,
        lease_s=settings.lease_s,
        sweep_interval_s=sweep_interval_s,
    )


def _generation_settings(settings: Settings, owner: str, retry: RetryPolicy) -> GenerationSettings:
    """The part of the settings a row's coroutine uses."""
    return GenerationSettings(
        owner=owner,
        bucket=settings.storage.bucket,
        public_base_url=settings.storage.public_base_url,
        source_hosts=settings.source_hosts,
        poll_interval_s=settings.poll_interval_s,
        max_poll_failures=settings.max_poll_failures,
        generation_timeout_s=settings.generation_timeout_s,
        progress_interval_s=settings.progress_interval_s,
        max_file_bytes=settings.max_file_bytes,
        spool_dir=settings.spool_dir,
        retry=retry,
        storage_hold_s=settings.storage_hold_s,
    )


def _push_sender(settings: Settings) -> FcmSender | None:
    """The FCM sender, or None when no credentials are set (pushes off, notification rows still written)."""
    if settings.firebase_credentials is None:
        return None
    return FcmSender.from_credentials(settings.firebase_credentials, settings.fcm_endpoint)

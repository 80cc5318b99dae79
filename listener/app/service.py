"""`listener run`: opens the adapters (wiring.py), starts the supervisor and serves until told to stop."""

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

from listener.adapters.postgres.pool import PgPool, is_transaction_pooler
from listener.adapters.storage.watch import CHECK_WHILE_BROKEN_S
from listener.app.dashboard.routes import dashboard_routes
from listener.app.health import HealthServer
from listener.app.settings import Settings
from listener.app.wiring import Adapters, wired
from listener.core.availability import Availability
from listener.core.file_sweep import CancelledFilesSweep
from listener.core.generation import run_job
from listener.core.ports import GenerationSettings
from listener.core.storage_state import StorageState
from listener.core.supervisor import Supervisor, SupervisorSettings
from listener.errors import DatabaseUnavailable
from listener.metrics import Metrics
from listener.notify.notifier import Notifier, PushNotifier
from listener.notify.progress_feeds import Deliver
from listener.redact import redact_url
from listener.retry import RetryPolicy

log = logging.getLogger(__name__)


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

    def __init__(self, storage_state: StorageState, ai_state: Availability, bucket: str) -> None:
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
    progress: Deliver | None = None,
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
    storage_state, ai_state = StorageState(), Availability()
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
        async with wired(settings, metrics, storage_state, ai_state, storage_recheck_s, progress) as adapters:
            if not await wait_for_database(adapters.pg, stop):
                log.info("listener_stopped_before_start")
                return None
            return await _serve_started(
                settings,
                stop,
                adapters,
                readiness,
                owner=owner,
                notifier=notifier,
                retry=retry,
                metrics=metrics,
                sweep_interval_s=sweep_interval_s,
                on_started=on_started,
            )
    finally:
        await health.stop()
        log.info("listener_stopped")


async def _serve_started(
    settings: Settings,
    stop: asyncio.Event,
    adapters: Adapters,
    readiness: Readiness,
    *,
    owner: str,
    notifier: Notifier | None,
    retry: RetryPolicy,
    metrics: Metrics,
    sweep_interval_s: float,
    on_started: Callable[[], None] | None,
) -> Supervisor:
    """With the database answering: checks the neighbours once, starts the supervisor, serves until `stop`."""
    await _warn_if_realtime_is_off(adapters.pg)
    await adapters.ai_watch.check()
    with contextlib.suppress(Exception):  # the watch logs its own trouble when it runs
        await (
            adapters.storage_watch.check_once()
        )  # rows that finish before the first check know where they stand
    if notifier is None:
        notifier = adapters.push_notifier(settings, retry, metrics)
        await notifier.start()
    supervisor = Supervisor(
        adapters.jobs,
        adapters.wake_ups,
        _supervisor_settings(settings, owner, sweep_interval_s),
        run_job=functools.partial(
            run_job, clients=adapters.rows, settings=_generation_settings(settings, owner, retry)
        ),
        notify=notifier.model_finished,
        metrics=metrics,
        claim_gate=adapters.rows.ai_state,
        milestones=adapters.rows.milestones,
    )
    await supervisor.start()
    readiness.pg, readiness.supervisor = adapters.pg, supervisor
    files = CancelledFilesSweep(adapters.jobs, adapters.rows.storage)
    background = [
        asyncio.create_task(files.run(), name="cancelled-files-sweep"),
        asyncio.create_task(adapters.storage_watch.run(), name="storage-watch"),
        asyncio.create_task(adapters.ai_watch.run(), name="ai-server-watch"),
    ]
    if isinstance(notifier, PushNotifier):
        background.append(asyncio.create_task(notifier.sweep_forever(), name="push-sweep"))
    if on_started is not None:
        on_started()
    log.info("listener_started", extra={"concurrency": settings.concurrency, "http_port": settings.http_port})
    try:
        await stop.wait()
    finally:
        log.info("listener_stopping", extra={"in_flight": len(supervisor.running)})
        for task in background:
            task.cancel()
        await supervisor.stop()
    return supervisor


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

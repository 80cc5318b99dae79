"""The one place that chooses and opens the adapters the core runs on, from the settings.

Today each port has one adapter: Postgres for jobs, leases, wake-ups and the push ledger;
the AI server's HTTP API; Supabase Storage over S3; FCM for pushes (or none without
credentials). A second AI provider, storage backend or channel is chosen here, and nowhere
else needs to know.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from listener.adapters.ai_server.client import AIClient
from listener.adapters.ai_server.watch import AIServerWatch
from listener.adapters.fcm import FcmSender
from listener.adapters.postgres.jobs import PgJobStore
from listener.adapters.postgres.listen import PgListener
from listener.adapters.postgres.pool import PgPool
from listener.adapters.postgres.progress_store import ProgressStore
from listener.adapters.postgres.push_store import PushStore
from listener.adapters.source_images import SourceImageFetcher
from listener.adapters.storage.s3 import Storage
from listener.adapters.storage.watch import StorageWatch
from listener.app.settings import Settings
from listener.core.availability import Availability
from listener.core.milestones import Milestones, NoMilestones
from listener.core.ports import RowDependencies
from listener.core.spool import SpoolBudget
from listener.core.storage_state import StorageState
from listener.metrics import Metrics
from listener.notify.notifier import PushNotifier
from listener.notify.progress_feeds import Deliver, ProgressFeeds
from listener.notify.progress_pushes import ProgressPushes
from listener.retry import RetryPolicy

# Waiting for a free connection of the pool is not timed (a burst of rows only queues);
# making a connection is, and so is every read (the first poll after success can be slow).
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=10, sock_read=180)


@dataclass
class Adapters:
    """What the core and the app run on, opened for the life of the process."""

    pg: PgPool
    jobs: PgJobStore
    wake_ups: PgListener
    rows: RowDependencies
    storage_watch: StorageWatch
    ai_watch: AIServerWatch
    sender: FcmSender | None

    def push_notifier(self, settings: Settings, retry: RetryPolicy, metrics: Metrics) -> PushNotifier:
        """The notifier that tells owners: a ledger in Postgres and the chosen sender."""
        return PushNotifier(PushStore(self.pg), self.sender, settings.push_texts, retry, metrics=metrics)


@asynccontextmanager
async def wired(
    settings: Settings,
    metrics: Metrics,
    storage_state: StorageState,
    ai_state: Availability,
    storage_recheck_s: float,
    progress: Deliver | None = None,
) -> AsyncIterator[Adapters]:
    """Opens every adapter the settings choose, and closes them all when the block ends.

    `progress` delivers lock-screen updates in place of FCM (the demo logs them).
    """
    async with (
        PgPool.connect(settings.database_url, max_size=settings.db_pool_size) as pg,
        aiohttp.ClientSession(timeout=HTTP_TIMEOUT, connector=aiohttp.TCPConnector(limit=256)) as http,
        # Submissions on connections of their own, never reused: one that must not be sent
        # twice is never written to a connection the server may have closed.
        aiohttp.ClientSession(
            timeout=HTTP_TIMEOUT, connector=aiohttp.TCPConnector(limit=64, force_close=True)
        ) as submit_http,
        Storage(settings.storage) as storage,
        SourceImageFetcher() as source_images,
    ):
        sender = _push_sender(settings)
        jobs = PgJobStore(pg)
        milestones = _progress_feeds(settings, pg, sender, metrics, progress)
        ai = AIClient(settings.ai_url, http, submit_http, result_origins=settings.result_origins)
        rows = RowDependencies(
            db=jobs,
            ai=ai,
            storage=storage,
            fetch_url=source_images.fetch,
            metrics=metrics,
            spool=SpoolBudget(settings.spool_max_bytes),
            storage_state=storage_state,
            ai_state=ai_state,
            milestones=milestones,
        )
        try:
            yield Adapters(
                pg=pg,
                jobs=jobs,
                wake_ups=PgListener(settings.database_url, on_silent=pg.drop_connections),
                rows=rows,
                storage_watch=StorageWatch(
                    storage, pg, settings.storage.bucket, storage_state, metrics, recheck_s=storage_recheck_s
                ),
                ai_watch=AIServerWatch(ai, ai_state, metrics),
                sender=sender,
            )
        finally:
            if isinstance(milestones, ProgressFeeds):
                await milestones.aclose()
            if sender is not None:
                await sender.aclose()


def _push_sender(settings: Settings) -> FcmSender | None:
    """The FCM sender, or None when no credentials are set (pushes off, notification rows still written)."""
    if settings.firebase_credentials is None:
        return None
    return FcmSender.from_credentials(settings.firebase_credentials, settings.fcm_endpoint)


def _progress_feeds(
    settings: Settings, pg: PgPool, sender: FcmSender | None, metrics: Metrics, deliver: Deliver | None
) -> Milestones:
    """Lock-screen progress through the push sender (or `deliver`), or nowhere when it is off."""
    if not settings.progress_pushes or (sender is None and deliver is None):
        return NoMilestones()
    store = ProgressStore(pg)
    if deliver is None:
        assert sender is not None
        texts = settings.progress_texts
        deliver = ProgressPushes(store, sender, texts, settings.push_texts, metrics=metrics).deliver
    return ProgressFeeds(deliver, store.is_cancelled, gap_s=settings.progress_push_gap_s)

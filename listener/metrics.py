"""The listener's Prometheus metrics, in a registry of its own (one per running listener)."""

from __future__ import annotations

import platform

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from listener import __version__

# A `_created` series beside every counter doubles what Prometheus stores for nothing we use.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600)
# Why rows fail: the step that failed, or a kind a step names. All are exported from the start
# (at 0), so that a rate() over them works before the first failure of each kind.
FAILURE_REASONS = (
    "validate",
    "submit",
    "poll",
    "fetch",
    "upload",
    "timeout",
    "upstream",
    "internal",
    "given_up",
    "other",
)


class Metrics:
    """Counters, gauges and histograms of one listener."""

    # Why Storage cannot be used (listener.adapters.storage.s3.Storage.check).
    STORAGE_PROBLEMS = ("no_bucket", "access_denied", "refused", "unreachable")

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The process (memory, CPU, open files), the interpreter and its garbage collector.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        Info("listener_build", "The running listener's version and Python.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        self.rows_claimed = Counter("listener_rows_claimed", "Rows claimed by this replica.", registry=r)
        self.rows_completed = Counter("listener_rows_completed", "Rows marked completed.", registry=r)
        self.rows_failed = Counter(
            "listener_rows_failed", "Rows marked failed, by the step that failed.", ["reason"], registry=r
        )
        self.rows_cancelled = Counter(
            "listener_rows_cancelled", "Rows whose work stopped because the owner cancelled.", registry=r
        )
        self.rows_in_flight = Gauge("listener_rows_in_flight", "Rows this replica is working on.", registry=r)
        self.claim_latency = Histogram(
            "listener_claim_latency_seconds",
            "From the row's insert (its notification) to its first claim.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "listener_end_to_end_seconds",
            "From the row's insert to its terminal status.",
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.ai_polls = Counter("listener_ai_polls", "Polls sent to the AI server.", registry=r)
        self.poll_lateness = Histogram(
            "listener_poll_lateness_seconds",
            "How much later than planned a poll started (a busy event loop shows here first).",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.ai_poll_errors = Counter("listener_ai_poll_errors", "Polls that failed.", registry=r)
        self.progress_writes = Counter(
            "listener_progress_writes", "Progress updates written to rows.", registry=r
        )
        self.bytes_uploaded = Counter("listener_uploaded_bytes", "Bytes uploaded to Storage.", registry=r)
        self.pushes_sent = Counter("listener_pushes_sent", "Push messages FCM accepted.", registry=r)
        self.pushes_failed = Counter("listener_pushes_failed", "Push messages FCM refused.", registry=r)
        self.progress_pushes_sent = Counter(
            "listener_progress_pushes_sent", "Lock-screen progress updates FCM accepted.", registry=r
        )
        self.progress_pushes_failed = Counter(
            "listener_progress_pushes_failed", "Lock-screen progress updates FCM refused.", registry=r
        )
        self.reconnects = Counter(
            "listener_listen_reconnects", "Reconnects of the LISTEN connection.", registry=r
        )
        self.ai_server_reachable = Gauge(
            "listener_ai_server_reachable",
            "1 while the AI server takes submissions, 0 while claims pause for it.",
            registry=r,
        )
        self.ai_server_reachable.set(1)
        self.storage_usable = Gauge(
            "listener_storage_usable", "1 while Storage can take uploads, 0 while it cannot.", registry=r
        )
        self.storage_problem = Gauge(
            "listener_storage_problem", "1 for why Storage cannot be used now.", ["reason"], registry=r
        )
        for reason in FAILURE_REASONS:
            self.rows_failed.labels(reason)
        for reason in self.STORAGE_PROBLEMS:
            self.storage_problem.labels(reason)

"""What a lock-screen update becomes: one message per device that asked for it, through FCM.

Where each row's devices are is the ledger's (adapters/postgres/progress_store.py): the
row's Live Activity, registered by the iPhone that started it, and the Android devices of
an owner who turned progress on. None of it touches the row's completion push: its claim,
its result and its notification row stay the notifier's alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from listener.core.milestones import Stage
from listener.metrics import Metrics
from listener.notify.messages import ProgressMessage, ProgressSender, SendOutcome, SendResult
from listener.notify.notifier import RELATED_TYPE
from listener.notify.progress_feeds import RowUpdate
from listener.notify.progress_texts import PROGRESS_TYPE, ProgressTexts, ProgressWords
from listener.notify.texts import NotificationTexts

log = logging.getLogger(__name__)

# A middle update that fails is left to the next one; the end, which none follows, is sent
# once more after this pause (well within the feed's timeout for one delivery).
END_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class LiveActivity:
    """A row's Live Activity: its APNs push token, and the FCM token of the iPhone showing it."""

    activity_token: str
    device_token: str


@dataclass(frozen=True)
class ProgressTargets:
    """Where one row's updates go: Android devices that opted in, and the row's Live Activity."""

    android: Sequence[str] = ()
    live_activity: LiveActivity | None = None


class ProgressLedger(Protocol):
    """Where the devices that want a row's updates are kept (adapters/postgres/progress_store.py)."""

    async def targets(self, model_id: uuid.UUID, user_id: uuid.UUID) -> ProgressTargets:
        """The row's Live Activity and its owner's opted-in Android tokens."""

    async def is_cancelled(self, model_id: uuid.UUID) -> bool:
        """True when the row's status is `cancelled`."""

    async def drop_dead(
        self, model_id: uuid.UUID, user_id: uuid.UUID, android: Sequence[str], live_activity: bool
    ) -> None:
        """Drops what FCM called dead: Android tokens as the completion push does, the row's Live Activity."""


class ProgressPushes:
    """Turns a row's update into FCM messages, sends them and drops the devices FCM calls dead."""

    def __init__(
        self,
        ledger: ProgressLedger,
        sender: ProgressSender,
        texts: ProgressTexts,
        end_texts: NotificationTexts,
        *,
        wall_clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.ledger = ledger
        self.sender = sender
        self.texts = texts
        self.end_texts = end_texts
        self._wall_clock = wall_clock
        self.metrics = metrics

    async def deliver(self, update: RowUpdate) -> None:
        """Sends `update` to every device that wants it; nothing when none does."""
        targets = await self.ledger.targets(update.model_id, update.user_id)
        messages = self.messages(update, targets)
        if not messages:
            return
        results = await self._send(messages, again=update.milestone.stage.is_end)
        outcomes = list(zip(messages, results, strict=True))
        dead = SendOutcome.DEAD_TOKEN
        android_dead = [m.token for m, r in outcomes if not m.is_live_activity and r.outcome is dead]
        live_activity_dead = any(m.is_live_activity and r.outcome is dead for m, r in outcomes)
        if android_dead or live_activity_dead:
            await self.ledger.drop_dead(update.model_id, update.user_id, android_dead, live_activity_dead)
        delivered = sum(r.outcome is SendOutcome.DELIVERED for r in results)
        log.info(
            "progress_push_sent",
            extra={
                "model_id": str(update.model_id),
                "stage": update.milestone.stage.value,
                "progress": update.milestone.progress,
                "messages": len(messages),
                "delivered": delivered,
                "dead": len(android_dead) + int(live_activity_dead),
                # Not retried: the next update, or the end, catches up; a setup error shows here.
                "errors": sorted({r.code or "?" for r in results if r.outcome is not SendOutcome.DELIVERED}),
            },
        )
        if self.metrics is not None:
            self.metrics.progress_pushes_sent.inc(delivered)
            self.metrics.progress_pushes_failed.inc(len(results) - delivered)

    async def _send(self, messages: list[ProgressMessage], *, again: bool) -> list[SendResult]:
        """Sends; an end that met a passing error is sent once more, as nothing follows it."""
        results = await self.sender.send_progress(messages)
        retry = [i for i, r in enumerate(results) if r.outcome is SendOutcome.RETRYABLE]
        if again and retry:
            await asyncio.sleep(END_RETRY_AFTER_S)
            for i, result in zip(
                retry, await self.sender.send_progress([messages[i] for i in retry]), strict=True
            ):
                results[i] = result
        return results

    def messages(self, update: RowUpdate, targets: ProgressTargets) -> list[ProgressMessage]:
        """One message per Android token and one for the Live Activity, all collapsing on the row's id."""
        milestone = update.milestone
        words = self.texts.render(milestone, update.model_name, update.reason, self.end_texts)
        ends = milestone.stage.is_end
        timestamp = int(self._wall_clock())
        data = {
            "type": PROGRESS_TYPE,
            "related_id": str(update.model_id),
            "related_type": RELATED_TYPE,
            "stage": milestone.stage.value,
            "progress": str(milestone.progress),
            "title": words.title,
            "body": words.body,
            "body_en": words.body_en,
            "timestamp": str(timestamp),
        }

        row = str(update.model_id)
        messages = [
            ProgressMessage(token, row, data, {}, timestamp, ends) for token in dict.fromkeys(targets.android)
        ]
        activity = targets.live_activity
        if activity is not None:
            state = content_state(milestone.stage, milestone.progress, words)
            messages.append(
                ProgressMessage(
                    activity.device_token, row, {}, state, timestamp, ends, activity.activity_token
                )
            )
        return messages


def content_state(stage: Stage, progress: int, words: ProgressWords) -> dict[str, str | int]:
    """The Live Activity's ContentState, as the app's ActivityKit attributes decode it."""
    return {
        "stage": stage.value,
        "progress": progress,
        "title": words.title,
        "body": words.body,
        "bodyEn": words.body_en,
    }


class LogProgress:
    """Writes each update to the log instead of sending it, and keeps what each row was told (the demo)."""

    def __init__(self) -> None:
        self.told: dict[uuid.UUID, list[str]] = defaultdict(list)

    async def deliver(self, update: RowUpdate) -> None:
        """Logs `update` and remembers it for the row."""
        milestone = update.milestone
        self.told[update.model_id].append(f"{milestone.stage.value} {milestone.progress}%")
        log.info(
            "progress_push_logged",
            extra={
                "model_id": str(update.model_id),
                "stage": milestone.stage.value,
                "progress": milestone.progress,
            },
        )

"""Telling a row's owner it finished, once: the notification row, then one push per device.

Once holds across crashes and replicas because every step is guarded in the database:
an attempt first claims the row's push (a unique claim id with a lease); the notification
row is inserted by the statement that sets its marker; the push step ends with
`push_sent_at` set by the holder of the claim. The attempt keeps extending its claim's
short lease while it runs, so that a replica that dies leaves a claim that runs out within
a minute; `sweep()` on any replica then finishes what is missing, skipping the notification
row if its marker is set. A database that is away while an attempt ends is waited for, not
given up on. The one window left is a death after FCM accepted a message and before
`push_sent_at` was written: the message is sent again, and its collapse id makes the device
replace the first one rather than show two.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from listener.core.data import FinishedRow
from listener.errors import DatabaseUnavailable, LeaseLost, PushUndelivered, TransientError
from listener.logs import current_model_id
from listener.metrics import Metrics
from listener.notify.ledger import AppSchema, ClaimedPush, PushLedger, PushResult, TokenShape
from listener.notify.messages import PushMessage, PushSender, SendOutcome, SendResult
from listener.notify.texts import NotificationTexts, Rendered
from listener.retry import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

RELATED_TYPE = "ai_model"
# How often pushes that a crashed replica left unsent are looked for, and how many
# batches one look takes at most.
SWEEP_INTERVAL_S = 15.0
# How long a push claim lasts unless the attempt holding it extends it (four times a lease).
PUSH_LEASE_S = 60.0
# How soon a claim that could not be extended, or an end that could not be written, is tried again.
DATABASE_RETRY_S = 1.0
SWEEP_BATCHES = 20
# A push stays far below FCM's 4 KB even in three-byte characters; the row keeps all.
PUSH_TITLE_MAX = 200
PUSH_BODY_MAX = 600


class Notifier(Protocol):
    """Where the supervisor hands a row that reached a terminal status."""

    async def model_finished(self, model: FinishedRow) -> None:
        """Tells the owner that `model` reached a terminal status; never raises."""


class LogNotifier:
    """Writes the news to the log only: used where nothing is to be sent (the demo)."""

    async def model_finished(self, model: FinishedRow) -> None:
        """Logs the terminal status instead of sending it."""
        log.info(
            "push_logged",
            extra={
                "model_id": str(model.model_id),
                "user_id": str(model.user_id),
                "status": model.status,
                "model_name": model.model_name,
                "error_message": model.error_message,
            },
        )


def _short(token: str) -> str:
    return f"...{token[-8:]}"


class PushNotifier:
    """The Notifier that writes the notification row and sends the pushes, once per finished row."""

    def __init__(
        self,
        store: PushLedger,
        sender: PushSender | None,
        texts: NotificationTexts,
        retry: RetryPolicy,
        *,
        lease_s: float | None = None,
        max_attempts: int = 5,
        max_age_s: float = 24 * 3600.0,
        sweep_batch: int = 50,
        sweep_concurrency: int = 8,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.sender = sender
        self.texts = texts
        self.retry = retry
        # A claim lasts a minute unless extended: its attempt extends it while it runs.
        self.lease_s = lease_s if lease_s is not None else PUSH_LEASE_S
        # An attempt lasts at most every retry, then a minute to spare.
        self.attempt_timeout_s = retry.deadline_s + 60.0
        self.max_attempts = max_attempts
        self.max_age_s = max_age_s
        self.sweep_batch = sweep_batch
        self._sweep_slots = asyncio.Semaphore(sweep_concurrency)
        self.schema: AppSchema | None = None
        self._start_lock = asyncio.Lock()
        self._told_config_errors: set[str] = set()
        self.metrics = metrics

    async def start(self) -> None:
        """Detects the token table's shape and the settings table; says so if pushes are off."""
        async with self._start_lock:
            if self.schema is not None:
                return
            schema = await self.retry.call(self.store.schema)
            log.info(
                "push_schema_detected",
                extra={"device_tokens": schema.tokens.value, "notification_settings": schema.has_settings},
            )
            if self.sender is None:
                log.warning(
                    "push_off",
                    extra={"hint": "FIREBASE_CREDENTIALS is not set; notification rows are still written"},
                )
            elif schema.tokens is TokenShape.MISSING:
                log.warning("push_no_token_table", extra={"hint": "public.user_device_tokens does not exist"})
            self.schema = schema

    async def model_finished(self, model: FinishedRow) -> None:
        """Tells the owner that `model` reached a terminal status; never raises."""
        context = current_model_id.set(str(model.model_id))
        try:
            await self.start()
            claim_id = _claim_id()
            push = await self.retry.call(
                lambda: self.store.claim_push(model.model_id, claim_id, self.lease_s)
            )
            if push is None:
                log.info("push_held_elsewhere")
                return
            await self._handle(push, claim_id)
        except Exception:
            log.exception("push_failed")
        finally:
            current_model_id.reset(context)

    async def sweep(self) -> int:
        """Finishes what crashed or unlucky attempts left unsent; returns how many rows it took."""
        try:
            await self.start()
            expired = await self.store.expire(self.max_attempts, self.max_age_s)
            if expired:
                log.warning("push_expired", extra={"count": expired})
            claim_id = _claim_id()
            pushes = await self.store.claim_unsent_pushes(
                claim_id, self.lease_s, self.sweep_batch, self.max_attempts, self.max_age_s
            )
        except TransientError as exc:
            log.warning("push_sweep_failed", extra={"error": str(exc)})
            return 0
        if pushes:
            log.info("push_sweep_claimed", extra={"count": len(pushes)})
        await asyncio.gather(*(self._handle_one(push, claim_id) for push in pushes))
        return len(pushes)

    async def sweep_forever(self, interval_s: float = SWEEP_INTERVAL_S) -> None:
        """Sends, now and then, what a replica that died left unsent; runs until cancelled."""
        while True:
            try:
                # A full batch means there may be more; a bounded number of batches per round.
                for _ in range(SWEEP_BATCHES):
                    if await self.sweep() < self.sweep_batch:
                        break
            except Exception:
                log.exception("push_sweep_failed")
            await asyncio.sleep(interval_s)

    async def _handle_one(self, push: ClaimedPush, claim_id: str) -> None:
        current_model_id.set(str(push.model_id))  # gather runs this in a task of its own
        async with self._sweep_slots:
            try:
                await self._handle(push, claim_id)
            except Exception:
                log.exception("push_failed")

    async def _handle(self, push: ClaimedPush, claim_id: str) -> None:
        deadline = asyncio.timeout(self.attempt_timeout_s)
        keeper = asyncio.create_task(
            self._keep_claim(push.model_id, claim_id), name=f"push-claim-{push.model_id}"
        )
        try:
            async with deadline:
                await self._notify(push, claim_id)
        except TimeoutError:
            if not deadline.expired():
                raise
            # Its claim is no longer extended; the sweep takes the row up once it runs out.
            log.error("push_timed_out", extra={"timeout_s": self.attempt_timeout_s})
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _keep_claim(self, model_id: uuid.UUID, claim_id: str) -> None:
        """Extends the attempt's claim while it runs: only the claim of a replica that died runs out."""
        wait_s = self.lease_s / 4
        while True:
            await asyncio.sleep(wait_s)
            try:
                if not await self.store.extend(model_id, claim_id, self.lease_s):
                    return  # taken over: the attempt finds out at its next write
                wait_s = self.lease_s / 4
            except TransientError:
                wait_s = min(DATABASE_RETRY_S, self.lease_s / 4)  # extended as soon as the database is back

    async def _notify(self, push: ClaimedPush, claim_id: str) -> None:
        words = self.texts.render(push.outcome, push.model_name, push.error_message)
        if not push.notification_written:
            metadata: dict[str, Any] = {"model_name": push.model_name, "status": push.outcome}
            if push.outcome == "failed":
                metadata["reason"] = push.error_message
            written = await self._db(lambda: self.store.write_notification(push, claim_id, words, metadata))
            if not written:
                log.warning("push_claim_lost", extra={"step": "notification"})
                return
            log.info("notification_written", extra={"type": words.type})
        try:
            result = await self._push(push, words, claim_id)
        except LeaseLost:
            log.warning("push_claim_lost", extra={"step": "send"})
            return
        if result is PushResult.RETRY and push.attempts >= self.max_attempts:
            result = PushResult.GAVE_UP
        if result is PushResult.RETRY:
            await self._db(lambda: self.store.release(push.model_id, claim_id))
            log.warning("push_deferred", extra={"attempt": push.attempts})
            return
        if not await self._db_until_back(lambda: self.store.finish(push.model_id, claim_id, result)):
            log.warning("push_claim_lost", extra={"step": "finish"})
            return
        log.info("push_done", extra={"result": result.value, "attempt": push.attempts})

    async def _push(self, push: ClaimedPush, words: Rendered, claim_id: str) -> PushResult:
        """Sends to every live token; returns the push_result to record (or `retry`)."""
        schema = self.schema
        assert schema is not None
        if self.sender is None:
            return PushResult.OFF
        if schema.has_settings:
            settings = await self._db(lambda: self.store.settings(push.user_id))
            if settings is not None and (
                settings.get("push_notifications") is False or settings.get("ai_complete_enabled") is False
            ):
                return PushResult.DISABLED
        if schema.tokens is TokenShape.MISSING:
            return PushResult.NO_TOKENS
        tokens = await self._db(lambda: self.store.tokens(schema.tokens, push.user_id))
        if not tokens:
            return PushResult.NO_TOKENS
        data = {"type": words.type, "related_id": str(push.model_id), "related_type": RELATED_TYPE}
        messages = [
            PushMessage(
                token=token,
                title=words.title[:PUSH_TITLE_MAX],
                body=words.message[:PUSH_BODY_MAX],
                data=data,
                collapse_id=str(push.model_id),
            )
            for token in tokens
        ]
        results = await self._send(
            self.sender, messages, lambda: self.store.extend(push.model_id, claim_id, self.lease_s)
        )
        by_outcome: dict[SendOutcome, list[SendResult]] = {outcome: [] for outcome in SendOutcome}
        for result in results:
            by_outcome[result.outcome].append(result)
        dead = [r.token for r in by_outcome[SendOutcome.DEAD_TOKEN]]
        if dead:
            dropped = await self._db(lambda: self.store.drop_tokens(schema.tokens, push.user_id, dead))
            log.info(
                "push_tokens_deactivated",
                extra={"count": dropped, "tokens": [_short(t) for t in dead], "codes": _codes(dead, results)},
            )
        for result in by_outcome[SendOutcome.CONFIG_ERROR]:
            self._tell_config_error(result)
        log.info(
            "push_sent",
            extra={outcome.value: len(found) for outcome, found in by_outcome.items()}
            | {"tokens": len(tokens)},
        )
        if self.metrics is not None:
            delivered = len(by_outcome[SendOutcome.DELIVERED])
            self.metrics.pushes_sent.inc(delivered)
            self.metrics.pushes_failed.inc(len(results) - delivered)
        if by_outcome[SendOutcome.DELIVERED]:
            return PushResult.SENT
        if by_outcome[SendOutcome.RETRYABLE]:
            return PushResult.RETRY
        if by_outcome[SendOutcome.CONFIG_ERROR]:
            return PushResult.CONFIG_ERROR
        return PushResult.DEAD_TOKENS

    async def _send(
        self, sender: PushSender, messages: list[PushMessage], keep_claim: Callable[[], Awaitable[bool]]
    ) -> list[SendResult]:
        """Sends, then sends again what met a retryable error, under the retry policy."""
        final: dict[str, SendResult] = {}
        pending = messages

        async def attempt() -> None:
            nonlocal pending
            # Only while the claim is ours and the database answers: what FCM takes is then
            # recorded a moment later, not after an outage in which this replica might die.
            if not await keep_claim():
                raise LeaseLost
            results = await sender.send(pending)
            final.update((r.token, r) for r in results)
            pending = [m for m, r in zip(pending, results, strict=True) if r.outcome is SendOutcome.RETRYABLE]
            if pending:
                codes = sorted({final[m.token].code or "?" for m in pending})
                raise PushUndelivered(f"{len(pending)} of {len(messages)} pushes not delivered yet: {codes}")

        try:
            await self.retry.call(attempt)
        except PushUndelivered as exc:
            log.warning("push_undelivered", extra={"error": str(exc)})
        return [final[m.token] for m in messages]

    def _tell_config_error(self, result: SendResult) -> None:
        key = result.code or "UNKNOWN"
        if key in self._told_config_errors:
            log.info("push_not_sent", extra={"code": key, "token": _short(result.token)})
            return
        self._told_config_errors.add(key)
        log.error(
            "push_config_error",
            extra={
                "code": key,
                "detail": result.detail,
                "hint": "check FIREBASE_CREDENTIALS, the Firebase project and its APNs setup; "
                "the model row is unaffected",
            },
        )

    async def _db(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await self.retry.call(fn)

    async def _db_until_back(self, fn: Callable[[], Awaitable[T]]) -> T:
        """A write recording what was sent: the database is waited for, or the sweep would send it again."""
        told = False
        while True:
            try:
                return await fn()
            except DatabaseUnavailable as exc:
                if not told:
                    log.warning("push_end_waits_for_database", extra={"error": str(exc)})
                    told = True
                await asyncio.sleep(DATABASE_RETRY_S)


def _claim_id() -> str:
    return uuid.uuid4().hex


def _codes(tokens: Sequence[str], results: Sequence[SendResult]) -> list[str | None]:
    by_token = {r.token: r.code for r in results}
    return [by_token.get(t) for t in tokens]

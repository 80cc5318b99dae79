"""The FCM edge: firebase-admin's async batch send, its errors turned into our own small results.

The only module that imports firebase_admin, google.* and httpx. firebase-admin's async
client is tied to the event loop that first uses it, so the app is made lazily inside the
running loop, under a name of its own per sender. Two things are replaced on that app's
messaging service: the FCM base URL (`FCM_ENDPOINT`), and the HTTP client, whose own
retries we turn off (the listener's RetryPolicy is the one retry policy) and whose
OAuth token refresh, synchronous in google-auth, we run in a thread so that the event
loop never waits on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
import warnings
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import firebase_admin
import google.auth.exceptions
import google.auth.transport.requests
import httpx
from firebase_admin import _http_client, _retry, credentials, exceptions, messaging

from listener.adapters.fcm_progress import to_fcm_progress_message
from listener.errors import ConfigError
from listener.notify.messages import ProgressMessage, PushMessage, SendOutcome, SendResult
from listener.redact import register_secret

log = logging.getLogger(__name__)
# A completion push or a lock-screen update: each has a token and its own firebase-admin shape.
M = TypeVar("M", PushMessage, ProgressMessage)

FCM_BASE_URL = "https://fcm.googleapis.com"
# What the mobile app expects of every push.
ANDROID_CHANNEL_ID = "factor_default"
SOUND = "default"
MAX_BATCH = 500

_RETRYABLE_CODES = frozenset(
    {
        exceptions.RESOURCE_EXHAUSTED,  # QUOTA_EXCEEDED
        exceptions.UNAVAILABLE,
        exceptions.INTERNAL,
        exceptions.DEADLINE_EXCEEDED,
        exceptions.ABORTED,
        exceptions.UNKNOWN,  # a dropped connection, a malformed answer
    }
)


def to_fcm_message(message: PushMessage) -> messaging.Message:
    """The firebase-admin message: notification, string data, Android channel and APNs sound."""
    # The app stores FCM registration tokens, which FCM v1 takes as `token`; firebase-admin
    # 7.7 deprecates that argument in favour of `fid` (installation ids), another thing.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _message(message)


def _message(message: PushMessage) -> messaging.Message:
    return messaging.Message(
        token=message.token,
        notification=messaging.Notification(title=message.title, body=message.body),
        data=dict(message.data),
        android=messaging.AndroidConfig(
            priority="high",
            notification=messaging.AndroidNotification(
                channel_id=ANDROID_CHANNEL_ID, sound=SOUND, tag=message.collapse_id
            ),
        ),
        apns=messaging.APNSConfig(
            headers={"apns-collapse-id": message.collapse_id},
            payload=messaging.APNSPayload(aps=messaging.Aps(sound=SOUND)),
        ),
    )


def read_service_account(path: Path) -> dict[str, Any]:
    """The service-account JSON, checked; its private key is registered as a secret at once."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"FIREBASE_CREDENTIALS is not a readable JSON file: {path}") from exc
    if not isinstance(info, dict):
        raise ConfigError(f"FIREBASE_CREDENTIALS is not a service-account JSON object: {path}")
    key = info.get("private_key")
    if isinstance(key, str):
        register_secret(key)
        register_secret(json.dumps(key)[1:-1])  # as it appears inside a JSON log line
    register_secret(info.get("private_key_id"))
    missing = [
        field
        for field in ("type", "project_id", "private_key", "client_email", "token_uri")
        if not isinstance(info.get(field), str) or not info[field]
    ]
    if missing:
        raise ConfigError(f"FIREBASE_CREDENTIALS lacks {', '.join(missing)}: {path}")
    if info["type"] != "service_account":
        raise ConfigError(f"FIREBASE_CREDENTIALS is not a service account (type {info['type']!r})")
    return info


class _AccessTokens:
    """The OAuth access token, refreshed in a thread (google-auth's refresh is blocking I/O)."""

    def __init__(self, credential: Any) -> None:
        self._credential = credential
        self._request = google.auth.transport.requests.Request()
        self._lock = asyncio.Lock()

    async def get(self, *, stale: str | None = None) -> str:
        """A valid access token, never `stale`; raises google.auth's RefreshError or TransportError."""
        async with self._lock:
            if not self._credential.valid or (stale is not None and self._credential.token == stale):
                await asyncio.to_thread(self._credential.refresh, self._request)
                register_secret(self._credential.token)
            token: str = self._credential.token
            return token

    def close(self) -> None:
        self._request.session.close()


class _BearerAuth(httpx.Auth):
    """httpx auth that never blocks the loop: the token comes from _AccessTokens."""

    def __init__(self, tokens: _AccessTokens) -> None:
        self._tokens = tokens

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._tokens.get()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # A token revoked before its expiry: one fresh token (one refresh for all the
            # messages that met it), then FCM's answer stands.
            request.headers["Authorization"] = f"Bearer {await self._tokens.get(stale=token)}"
            yield request


@dataclass
class _Live:
    """The firebase app of one event loop, with what was put in place on it."""

    app: Any
    client: Any
    tokens: _AccessTokens
    loop: asyncio.AbstractEventLoop


class FcmSender:
    """Sends pushes through firebase-admin's `send_each_async` on the running loop."""

    def __init__(
        self, info: Mapping[str, Any], endpoint: str | None = None, *, timeout_s: float = 10.0
    ) -> None:
        try:
            self._certificate = credentials.Certificate(dict(info))
        except ValueError as exc:
            raise ConfigError(f"FIREBASE_CREDENTIALS is not a usable service account: {exc}") from exc
        self.project_id: str = info["project_id"]
        self.endpoint = (endpoint or FCM_BASE_URL).rstrip("/")
        self.timeout_s = timeout_s
        self._app_name = f"listener-{uuid.uuid4().hex}"
        self._live: _Live | None = None
        self._live_lock = asyncio.Lock()

    @classmethod
    def from_credentials(
        cls, path: Path, endpoint: str | None = None, *, timeout_s: float = 10.0
    ) -> FcmSender:
        """A sender for the service account in `path`, optionally through another FCM base URL."""
        return cls(read_service_account(path), endpoint, timeout_s=timeout_s)

    @property
    def fcm_url(self) -> str:
        """Where messages are posted."""
        return f"{self.endpoint}/v1/projects/{self.project_id}/messages:send"

    async def _ensure_live(self) -> _Live:
        loop = asyncio.get_running_loop()
        async with self._live_lock:
            if self._live is None:
                # Building the app makes SSL contexts and parses the key: a thread's work.
                # httpx binds to a loop on first use only, so the clients still belong to this one.
                app, client, tokens = await asyncio.to_thread(self._build)
                self._live = _Live(app, client, tokens, loop)
        if self._live.loop is not loop:
            raise RuntimeError("an FcmSender serves the event loop that first used it; make one per loop")
        return self._live

    def _build(self) -> tuple[Any, Any, _AccessTokens]:
        app = firebase_admin.initialize_app(
            self._certificate,
            options={"projectId": self.project_id, "httpTimeout": self.timeout_s},
            name=self._app_name,
        )
        service = messaging._get_messaging_service(app)
        if not hasattr(service, "_fcm_url") or not hasattr(service, "_async_client"):
            firebase_admin.delete_app(app)
            raise ConfigError(
                "this firebase-admin version has no _fcm_url/_async_client to point at FCM_ENDPOINT"
            )
        tokens = _AccessTokens(self._certificate.get_credential())
        client = _http_client.HttpxAsyncClient(
            credential=None, timeout=self.timeout_s, retry_config=_retry.HttpxRetry(max_retries=0)
        )
        client.async_client.auth = _BearerAuth(tokens)
        service._fcm_url = self.fcm_url
        service._async_client = client
        return app, client, tokens

    async def send(self, messages: Sequence[PushMessage]) -> list[SendResult]:
        """One result per message, in order; never raises but for cancellation."""
        return await self._send_all(messages, to_fcm_message)

    async def send_progress(self, messages: Sequence[ProgressMessage]) -> list[SendResult]:
        """One result per lock-screen update, in order; never raises but for cancellation."""
        return await self._send_all(messages, to_fcm_progress_message)

    async def _send_all(
        self, messages: Sequence[M], build: Callable[[M], messaging.Message]
    ) -> list[SendResult]:
        results: list[SendResult] = []
        for start in range(0, len(messages), MAX_BATCH):
            results.extend(await self._send_batch(messages[start : start + MAX_BATCH], build))
        return results

    async def _send_batch(
        self, batch: Sequence[M], build: Callable[[M], messaging.Message]
    ) -> list[SendResult]:
        if not batch:
            return []
        try:
            return await self._send_batch_or_raise(batch, build)
        except Exception as exc:
            # firebase-admin's internals moved, or it broke in a way not foreseen: the setup's
            # fault, never a token's; told once as a configuration error, nothing deactivated.
            detail = f"{type(exc).__name__}: {exc}"
            return [SendResult(m.token, SendOutcome.CONFIG_ERROR, "SDK", detail) for m in batch]

    async def _send_batch_or_raise(
        self, batch: Sequence[M], build: Callable[[M], messaging.Message]
    ) -> list[SendResult]:
        try:
            live = await self._ensure_live()
        except ConfigError as exc:
            return [SendResult(m.token, SendOutcome.CONFIG_ERROR, "SDK", str(exc)) for m in batch]
        try:
            await live.tokens.get()
        except google.auth.exceptions.GoogleAuthError as exc:
            return [self._auth_failure(m.token, exc) for m in batch]
        try:
            response = await messaging.send_each_async([build(m) for m in batch], app=live.app)
        except ValueError as exc:  # firebase-admin refused to build the payload
            return [SendResult(m.token, SendOutcome.CONFIG_ERROR, "PAYLOAD", str(exc)) for m in batch]
        except exceptions.FirebaseError as exc:
            cause = exc.cause
            if isinstance(cause, google.auth.exceptions.GoogleAuthError):
                return [self._auth_failure(m.token, cause) for m in batch]
            return [SendResult(m.token, SendOutcome.RETRYABLE, exc.code, str(exc)) for m in batch]
        return [self._result(m.token, r) for m, r in zip(batch, response.responses, strict=True)]

    @staticmethod
    def _result(token: str, response: messaging.SendResponse) -> SendResult:
        if response.success:
            return SendResult(token, SendOutcome.DELIVERED)
        exc = response.exception
        code = getattr(exc, "code", None)
        detail = str(exc)
        # What concerns this token alone: it is dead, deactivate it (and nothing else).
        if isinstance(exc, messaging.UnregisteredError):
            return SendResult(token, SendOutcome.DEAD_TOKEN, "UNREGISTERED", detail)
        if isinstance(exc, messaging.SenderIdMismatchError):
            return SendResult(token, SendOutcome.DEAD_TOKEN, "SENDER_ID_MISMATCH", detail)
        if code == exceptions.INVALID_ARGUMENT:
            # FCM says which argument: the token ("not a valid FCM registration token"), or
            # a part of the payload, which is ours to fix and no token's fault.
            bad_token = "registration token" in detail.lower()
            return SendResult(
                token, SendOutcome.DEAD_TOKEN if bad_token else SendOutcome.CONFIG_ERROR, code, detail
            )
        if isinstance(exc, messaging.QuotaExceededError):
            return SendResult(token, SendOutcome.RETRYABLE, "QUOTA_EXCEEDED", detail)
        if code in _RETRYABLE_CODES:
            return SendResult(token, SendOutcome.RETRYABLE, code, detail)
        if isinstance(exc, messaging.ThirdPartyAuthError):
            code = "THIRD_PARTY_AUTH_ERROR"
        return SendResult(token, SendOutcome.CONFIG_ERROR, code, detail)

    @staticmethod
    def _auth_failure(token: str, exc: BaseException) -> SendResult:
        # The token endpoint refused the service account (config), or could not be reached.
        retryable = isinstance(exc, google.auth.exceptions.TransportError) or bool(
            getattr(exc, "retryable", False)
        )
        outcome = SendOutcome.RETRYABLE if retryable else SendOutcome.CONFIG_ERROR
        return SendResult(token, outcome, "OAUTH_TOKEN", f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        """Closes the HTTP client and deletes the firebase app; call it on the loop that sent."""
        live, self._live = self._live, None
        if live is None:
            return
        await live.client.aclose()
        live.tokens.close()
        # delete_app closes the service with asyncio.run(): only possible off this loop;
        # the client is closed already, so that is a no-op there.
        await asyncio.to_thread(firebase_admin.delete_app, live.app)

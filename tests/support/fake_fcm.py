"""A local stand-in for FCM HTTP v1 and Google's OAuth token endpoint, on 127.0.0.1.

firebase-admin's async client is httpx with HTTP/2 enabled; on a plain http:// URL httpx
speaks HTTP/1.1 (h2 is negotiated through TLS ALPN only), so an aiohttp server will do.
The token endpoint checks the JWT-bearer grant the way Google does in substance: the
assertion must be signed by the service account's private key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

PROJECT_ID = "listener-test"
CLIENT_EMAIL = f"firebase-adminsdk@{PROJECT_ID}.iam.gserviceaccount.com"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
# The FcmError code FCM puts beside each HTTP status it answers with on its own.
_FCM_CODES = {429: "QUOTA_EXCEEDED", 500: "INTERNAL", 503: "UNAVAILABLE"}


@dataclass
class FcmRequest:
    """One message request as FCM received it, and the status it was answered with."""

    body: dict[str, Any]
    status: int
    http_version: str
    headers: dict[str, str]
    received_at: float = field(default_factory=time.time)

    @property
    def token(self) -> str:
        token: str = self.body["message"]["token"]
        return token


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def fcm_error(status: int, fcm_code: str | None = None, message: str = "error") -> dict[str, Any]:
    """An error body as FCM v1 writes it."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if fcm_code:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}]
    return {"error": error}


@dataclass
class FakeFcm:
    """FCM's messages:send and the OAuth token endpoint; behaviour set per test."""

    # Tokens FCM no longer knows (404 UNREGISTERED), tokens it calls malformed (400), and
    # tokens of another Firebase project (403 SENDER_ID_MISMATCH).
    unregistered: set[str] = field(default_factory=set)
    invalid: set[str] = field(default_factory=set)
    mismatched: set[str] = field(default_factory=set)
    # Statuses to answer the next message requests with, whatever their token (then 200).
    fail_next: list[int] = field(default_factory=list)
    # Every message request answers 503 while True.
    down: bool = False
    # Every message request answers this error (status, FCM code, message) while set.
    always: tuple[int, str | None, str] | None = None
    # Error answers quote the request's Authorization header, as some proxies' do: whatever
    # the listener logs of an error must not carry the access token.
    echo_authorization: bool = False
    # While set and not yet released, token requests wait (a process can be killed there).
    token_gate: asyncio.Event | None = None
    requests: list[FcmRequest] = field(default_factory=list)
    request_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    token_requests: int = 0
    token_requests_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    issued: set[str] = field(default_factory=set)
    private_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        """The value of FCM_ENDPOINT for this server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        """The OAuth token endpoint named in the credentials file."""
        return f"{self.base_url}/token"

    @property
    def delivered(self) -> list[FcmRequest]:
        """The message requests FCM accepted (200)."""
        return [r for r in self.requests if r.status == 200]

    async def start(self) -> None:
        """Serves on a free port of 127.0.0.1."""
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stops serving."""
        if self.token_gate is not None:
            self.token_gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, received: Callable[[list[FcmRequest]], bool]) -> None:
        """Returns once the requests received so far satisfy `received` (the caller bounds the wait)."""
        while not received(self.requests):
            self.request_arrived.clear()
            await self.request_arrived.wait()

    def write_credentials(self, path: Path) -> Path:
        """A service-account file with this server's fresh RSA key and its token_uri; returns `path`."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": PROJECT_ID,
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }
        path.write_text(json.dumps(info), encoding="utf-8")
        return path

    def _verify_assertion(self, assertion: str) -> dict[str, Any]:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        self.private_key.public_key().verify(
            _b64decode(signature_b64),
            f"{header_b64}.{claims_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        claims: dict[str, Any] = json.loads(_b64decode(claims_b64))
        return claims

    async def _token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        self.token_requests_arrived.set()
        if self.token_gate is not None:
            await self.token_gate.wait()
        form = await request.post()
        if form.get("grant_type") != JWT_BEARER:
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = self._verify_assertion(str(form.get("assertion")))
        except Exception:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "bad signature"}, status=400
            )
        # google-auth puts Google's own token endpoint in `aud`, wherever it posts the grant.
        if claims.get("iss") != CLIENT_EMAIL or claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "bad claims"}, status=400
            )
        token = f"ya29.fake-{secrets.token_urlsafe(24)}"
        self.issued.add(token)
        return web.json_response({"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    async def _send(self, request: web.Request) -> web.Response:
        body = await request.json()
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        status, answer = self._answer(request, body)
        if status != 200 and self.echo_authorization:
            error = answer["error"]
            error["message"] = (
                f"{error['message']} (request authorization: {request.headers.get('Authorization')})"
            )
        self.requests.append(FcmRequest(body, status, version, dict(request.headers)))
        self.request_arrived.set()
        return web.json_response(answer, status=status)

    def _answer(self, request: web.Request, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.issued:
            return 401, fcm_error(401, None, "Request had invalid authentication credentials.")
        if request.match_info["project"] != PROJECT_ID:
            return 404, fcm_error(404, None, "Requested entity was not found.")
        if self.always is not None:
            status, code, message = self.always
            return status, fcm_error(status, code, message)
        if self.down:
            return 503, fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.")
        if self.fail_next:
            status = self.fail_next.pop(0)
            return status, fcm_error(status, _FCM_CODES.get(status))
        token = body["message"]["token"]
        if token in self.unregistered:
            return 404, fcm_error(404, "UNREGISTERED", "Requested entity was not found.")
        if token in self.invalid:
            return 400, fcm_error(
                400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token"
            )
        if token in self.mismatched:
            return 403, fcm_error(403, "SENDER_ID_MISMATCH", "SenderId mismatch")
        return 200, {"name": f"projects/{PROJECT_ID}/messages/{len(self.requests) + 1}"}

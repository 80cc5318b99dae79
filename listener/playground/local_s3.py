"""A local S3 (moto's server on 127.0.0.1) for the demo and the tests, with failure injection."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import botocore.config
import botocore.session

from listener.adapters.storage.config import StorageConfig

_ACCESS_KEY_ID = "local-access-key"
_SECRET_ACCESS_KEY = "local-secret-key"
_ERROR_CODES = {
    403: "AccessDenied",
    404: "NoSuchKey",
    429: "SlowDown",
    500: "InternalError",
    503: "SlowDown",
}


@dataclass
class _Fault:
    status: int
    code: str
    methods: frozenset[str]
    remaining: int | None  # None: every matching request, until cleared


class _FaultInjector:
    """WSGI middleware in front of moto: records requests and headers, answers some with an S3 error."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.fault: _Fault | None = None
        self.requests: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []  # of each request in `requests`, names in lower case
        self.failed = 0

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ["REQUEST_METHOD"])
        target = str(environ.get("PATH_INFO", ""))
        if query := environ.get("QUERY_STRING"):
            target = f"{target}?{query}"
        with self.lock:
            self.requests.append((method, target))
            self.headers.append(_headers(environ))
            fault = self.fault
            if fault is not None and method in fault.methods:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.fault = None
                self.failed += 1
            else:
                fault = None
        if fault is None:
            return self.app(environ, start_response)
        # Read the body first: werkzeug closes the connection after answering, and a
        # client still sending would see a reset instead of the status we mean to show.
        _drain(environ)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{fault.code}</Code><Message>Injected by LocalS3</Message>"
            "<RequestId>local</RequestId></Error>"
        ).encode()
        start_response(
            f"{fault.status} Injected",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
        )
        # An answer to HEAD has no body, as S3's own: a body there would break the connection.
        return [] if method == "HEAD" else [body]


def _headers(environ: WSGIEnvironment) -> dict[str, str]:
    """A request's headers as the client sent them (WSGI keeps them as HTTP_* keys), names in lower case."""
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key])
    return headers


def _drain(environ: WSGIEnvironment) -> None:
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        while stream.read(64 * 1024):
            pass
        return
    left = int(environ.get("CONTENT_LENGTH") or 0)
    while left > 0 and (chunk := stream.read(min(left, 64 * 1024))):
        left -= len(chunk)


class LocalS3:
    """moto's S3 server on a free port of 127.0.0.1, with one bucket created in it."""

    def __init__(
        self,
        bucket: str = "ai-models",
        region: str = "us-east-1",
        public_base_url: str = "http://localhost:54321",
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.public_base_url = public_base_url
        self._server: Any = None
        self._injector: _FaultInjector | None = None
        self._client: Any = None
        self._endpoint_url: str | None = None

    def start(self) -> StorageConfig:
        """Start the server, create the bucket and return a config pointing at it."""
        # moto is the optional `demo` extra: the service itself must import without it.
        from moto.server import ThreadedMotoServer

        # werkzeug logs every request at INFO to stderr; the demo's screen is for progress.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        self._server = server
        # ThreadedMotoServer has no hook for faults: wrap the WSGI app its server dispatches to.
        wsgi_server: Any = server._server
        self._injector = _FaultInjector(wsgi_server.app)
        wsgi_server.app = self._injector
        host, port = server.get_host_and_port()
        self._endpoint_url = f"http://{host}:{port}"
        self._client = botocore.session.get_session().create_client(
            "s3",
            region_name=self.region,
            endpoint_url=self._endpoint_url,
            aws_access_key_id=_ACCESS_KEY_ID,
            aws_secret_access_key=_SECRET_ACCESS_KEY,
            config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
        )
        self._create_bucket()
        return self.config()

    def config(self) -> StorageConfig:
        """Return a StorageConfig pointing at the running server."""
        if self._endpoint_url is None:
            raise RuntimeError("LocalS3 is not started")
        return StorageConfig(
            endpoint_url=self._endpoint_url,
            region=self.region,
            access_key_id=_ACCESS_KEY_ID,
            secret_access_key=_SECRET_ACCESS_KEY,
            bucket=self.bucket,
            public_base_url=self.public_base_url,
            connect_timeout_s=5.0,
            read_timeout_s=30.0,
        )

    def stop(self) -> None:
        """Stop the server; objects stay in moto's in-process memory until the process ends."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._endpoint_url = None
        self._injector = None

    def read_object(self, key: str) -> bytes:
        """Return an object's bytes."""
        answer = self._require_client().get_object(Bucket=self.bucket, Key=key)
        with answer["Body"] as body:
            return bytes(body.read())

    def object_info(self, key: str) -> tuple[int, str]:
        """Return an object's size and content type."""
        answer = self._require_client().head_object(Bucket=self.bucket, Key=key)
        return int(answer["ContentLength"]), str(answer["ContentType"])

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket that starts with `prefix`."""
        client = self._require_client()
        found: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return found

    def put_object(self, key: str, data: bytes, content_type: str = "image/png") -> None:
        """Store an object directly (a user's source image, for instance)."""
        self._require_client().put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def pending_multipart_uploads(self) -> int:
        """Return how many multipart uploads were started and neither completed nor aborted."""
        answer = self._require_client().list_multipart_uploads(Bucket=self.bucket)
        return len(answer.get("Uploads", []))

    def fail_requests(
        self,
        status: int = 503,
        *,
        times: int | None = None,
        methods: Iterable[str] = ("PUT", "POST"),
        code: str | None = None,
    ) -> None:
        """Answer the next `times` requests (None: all, until cleared) with an S3 error."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for every request")
        code = code or _ERROR_CODES.get(status, "InternalError" if status >= 500 else "Invalid")
        fault = _Fault(status, code, frozenset(m.upper() for m in methods), times)
        injector = self._require_injector()
        with injector.lock:
            injector.fault = fault

    def stop_failing(self) -> None:
        """Let every request through to moto again."""
        injector = self._require_injector()
        with injector.lock:
            injector.fault = None

    @property
    def failed_requests(self) -> int:
        """How many requests were answered with an injected error."""
        injector = self._require_injector()
        with injector.lock:
            return injector.failed

    @property
    def requests(self) -> list[tuple[str, str]]:
        """Every request seen so far, as (method, path?query)."""
        injector = self._require_injector()
        with injector.lock:
            return list(injector.requests)

    @property
    def requests_with_headers(self) -> list[tuple[str, str, dict[str, str]]]:
        """Every request seen so far, as (method, path?query, headers with lower-case names)."""
        injector = self._require_injector()
        with injector.lock:
            return [(m, t, dict(h)) for (m, t), h in zip(injector.requests, injector.headers, strict=True)]

    def __enter__(self) -> LocalS3:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def create_bucket(self, name: str) -> None:
        """Makes another bucket (the server holds any number), as an operator fixing a setup would."""
        self._create_bucket(name)

    def _create_bucket(self, name: str | None = None) -> None:
        kwargs: dict[str, Any] = {"Bucket": name or self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        client = self._require_client()
        # moto's state is per process: an earlier LocalS3 may have made the bucket.
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(**kwargs)

    def _require_client(self) -> Any:
        if self._client is None:
            raise RuntimeError("LocalS3 is not started")
        return self._client

    def _require_injector(self) -> _FaultInjector:
        if self._injector is None:
            raise RuntimeError("LocalS3 is not started")
        return self._injector

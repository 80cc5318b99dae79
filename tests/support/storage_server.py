"""The real Supabase Storage server on loopback: file backend, its own database, behind HTTPS.

`RealStorage` runs the server built by `storage_build` on a database of its own (the
server migrates it; `listener migrate` then adds the app's tables beside its `storage`
schema, as on a Supabase project), and a small HTTPS gateway in front that serves it under
`/storage/v1`, so `$SUPABASE_URL/storage/v1/s3` and the public object URLs work as in
production. RowDependencies trust the gateway's certificate through `AWS_CA_BUNDLE` (botocore) and
`ca_file` (anything else).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import asyncpg
import boto3  # type: ignore[import-untyped, unused-ignore]
import botocore.config
import jwt

from listener.adapters.postgres.migrate import migrate
from listener.adapters.storage.config import StorageConfig
from listener.playground.embedded import free_port
from tests.support.certificates import write_self_signed
from tests.support.database import dsn_for
from tests.support.storage_build import BuiltServer

DATABASE = "real_storage"
REGION = "eu-central-1"
ACCESS_KEY_ID = "real-storage-access-key"
SECRET_ACCESS_KEY = "real-storage-secret-key-0123456789"
JWT_SECRET = "real-storage-jwt-secret-at-least-32-characters"
GATEWAY = Path(__file__).with_name("storage_gateway.mjs")
START_TIMEOUT_S = 120.0


class RealStorage:
    """The Storage server and its gateway, started and stopped by this object."""

    def __init__(self, built: BuiltServer, admin_dsn: str) -> None:
        self.built = built
        self.db_url = dsn_for(admin_dsn, DATABASE)
        self._admin_dsn = admin_dsn
        self._work = Path(tempfile.mkdtemp(prefix="listener-real-storage-"))
        self.ca_file = self._work / "gateway-cert.pem"
        self.log_file = self._work / "server.log"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._log: IO[bytes] | None = None
        self.base_url = ""

    def __enter__(self) -> RealStorage:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """A fresh database, the server on it, the app's tables beside it, the gateway in front."""
        asyncio.run(self._recreate_database())
        port = free_port()
        self._log = self.log_file.open("wb")
        self._processes.append(
            subprocess.Popen(
                [str(self.built.node), "dist/start/server.js"],
                cwd=self.built.server_dir,
                env=self._server_env(port),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        )
        self._wait_for_status(port)
        asyncio.run(self._migrate_app_tables())
        self.base_url = f"https://127.0.0.1:{self._start_gateway(port)}"

    def stop(self) -> None:
        """Ends the processes this object started and removes its files."""
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        self._processes.clear()
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self._work, ignore_errors=True)

    def config(self, bucket: str = "ai-models", **changes: Any) -> StorageConfig:
        """What the listener is given to use the bucket through the gateway."""
        values: dict[str, Any] = {
            "endpoint_url": f"{self.base_url}/storage/v1/s3",
            "region": REGION,
            "access_key_id": ACCESS_KEY_ID,
            "secret_access_key": SECRET_ACCESS_KEY,
            "bucket": bucket,
            "public_base_url": self.base_url,
        }
        values.update(changes)
        return StorageConfig(**values)

    def client(self) -> Any:
        """A boto3 client with the right keys, for setting up and reading back."""
        return boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=f"{self.base_url}/storage/v1/s3",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            verify=str(self.ca_file),
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    async def create_bucket(
        self, name: str, *, file_size_limit: int | None = None, allowed_mime_types: list[str] | None = None
    ) -> None:
        """A public bucket with these limits, made as a project's owner would (S3, then its settings)."""
        await asyncio.to_thread(self._s3, "create_bucket", Bucket=name)
        await self.set_limits(name, file_size_limit=file_size_limit, allowed_mime_types=allowed_mime_types)

    async def set_limits(
        self, name: str, *, file_size_limit: int | None = None, allowed_mime_types: list[str] | None = None
    ) -> None:
        """Sets the bucket's own limits, as the dashboard's bucket settings do."""
        conn = await asyncpg.connect(self.db_url)
        try:
            await conn.execute(
                "UPDATE storage.buckets SET public = true, file_size_limit = $2, allowed_mime_types = $3 "
                "WHERE id = $1",
                name,
                file_size_limit,
                allowed_mime_types,
            )
        finally:
            await conn.close()

    async def delete_bucket(self, name: str) -> None:
        """Empties the bucket and deletes it."""
        await asyncio.to_thread(self._empty_and_delete, name)

    async def object_digest(self, bucket: str, key: str) -> tuple[int, str, str]:
        """(size, sha256, content type) of an object, read back through S3."""
        return await asyncio.to_thread(self._digest, bucket, key)

    async def public_status(self, url: str) -> int:
        """The HTTP status of a public object URL, fetched as a browser would."""
        return await asyncio.to_thread(self._status, url)

    def _s3(self, operation: str, **params: Any) -> Any:
        client = self.client()
        try:
            return getattr(client, operation)(**params)
        finally:
            client.close()

    def _empty_and_delete(self, name: str) -> None:
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
        client.close()

    def _digest(self, bucket: str, key: str) -> tuple[int, str, str]:
        client = self.client()
        answer = client.get_object(Bucket=bucket, Key=key)
        digest, size = hashlib.sha256(), 0
        for chunk in answer["Body"].iter_chunks(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
        client.close()
        return size, digest.hexdigest(), str(answer["ContentType"])

    def _status(self, url: str) -> int:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with urllib.request.urlopen(url, context=context, timeout=30) as answer:
                answer.read()
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)

    def _server_env(self, port: int) -> dict[str, str]:
        files = self._work / "objects"
        files.mkdir()
        return {
            **self.built.node_env(),
            "NODE_ENV": "production",
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(port),
            "SERVER_ADMIN_PORT": str(free_port()),
            "DATABASE_URL": self.db_url,
            "DB_INSTALL_ROLES": "true",
            "PG_QUEUE_ENABLE": "false",
            "TENANT_ID": "listener-tests",
            "AUTH_JWT_SECRET": JWT_SECRET,
            "ANON_KEY": _key("anon"),
            "SERVICE_KEY": _key("service_role"),
            "STORAGE_BACKEND": "file",
            "FILE_STORAGE_BACKEND_PATH": str(files),
            "STORAGE_S3_BUCKET": "listener-tests",  # unused by the file backend, but read
            "STORAGE_S3_REGION": REGION,
            "REGION": REGION,
            "FILE_SIZE_LIMIT": str(4 * 1024**3),  # the project's global limit: above 1 GiB
            "S3_PROTOCOL_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "S3_PROTOCOL_ACCESS_KEY_SECRET": SECRET_ACCESS_KEY,
            "S3_PROTOCOL_ENFORCE_REGION": "true",
            "S3_PROTOCOL_PREFIX": "/storage/v1",  # the gateway's prefix, part of what clients sign
            "LOG_LEVEL": "warn",
        }

    def _wait_for_status(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._processes[0].poll() is not None:
                raise RuntimeError(f"the Storage server exited: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the Storage server did not start in {START_TIMEOUT_S:g} s: {self._log_tail()}")

    def _start_gateway(self, upstream_port: int) -> int:
        key_file = self._work / "gateway-key.pem"
        write_self_signed(self.ca_file, key_file)
        gateway = subprocess.Popen(
            [str(self.built.node), str(GATEWAY), str(self.ca_file), str(key_file), str(upstream_port)],
            env=self.built.node_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._processes.append(gateway)
        assert gateway.stdout is not None
        line = gateway.stdout.readline()
        if not line:
            raise RuntimeError(f"the HTTPS gateway did not start: {self._log_tail()}")
        return int(json.loads(line)["port"])

    def _log_tail(self) -> str:
        return self.log_file.read_text(errors="replace")[-2000:]

    async def _recreate_database(self) -> None:
        admin = await asyncpg.connect(self._admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()

    async def _migrate_app_tables(self) -> None:
        conn = await asyncpg.connect(self.db_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()


def _key(role: str) -> str:
    """An API key as a project has them: a JWT with the role, signed with the project's secret."""
    return jwt.encode({"role": role, "iss": "supabase", "exp": 4102444800}, JWT_SECRET, "HS256")

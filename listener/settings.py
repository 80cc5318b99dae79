"""Settings: read once from the environment (and a `.env` file) into one frozen object."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from listener.errors import ConfigError
from listener.logs import redact_url
from listener.push.texts import NotificationTexts

T = TypeVar("T")


@dataclass(frozen=True)
class StorageConfig:
    """Where Storage is and how to sign requests to it."""

    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    bucket: str
    public_base_url: str
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    request_timeout_s: float = 300.0  # bounds one request: a PutObject, a part, a download


@dataclass(frozen=True)
class Settings:
    """Everything `listener run` needs, with units in the names."""

    database_url: str = field(repr=False)
    ai_url: str
    storage: StorageConfig
    firebase_credentials: Path | None
    fcm_endpoint: str | None
    push_texts: NotificationTexts
    concurrency: int
    per_user_limit: int
    poll_interval_s: float
    max_poll_failures: int
    generation_timeout_s: float
    lease_s: float
    source_hosts: frozenset[str]
    http_host: str
    http_port: int
    log_format: str
    progress_interval_s: float
    max_file_bytes: int
    spool_dir: Path


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a `.env` file; blank lines, comments and `export ` are allowed."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def environment(env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> dict[str, str]:
    """The process environment over the `.env` file of the working folder."""
    merged = read_dotenv(dotenv or Path(".env"))
    merged.update(os.environ if env is None else env)
    return merged


class _Reader:
    """Reads one setting at a time; every error names the setting."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str, default: str | None) -> str:
        value = self.env.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(f"{name} is not set")
        return default

    def text(self, name: str, default: str | None = None) -> str:
        return self._raw(name, default)

    def optional(self, name: str) -> str | None:
        return self.env.get(name, "").strip() or None

    def _parsed(self, name: str, default: str, parse: Callable[[str], T], what: str) -> T:
        raw = self._raw(name, default)
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {what}, got {raw!r}") from None

    def positive_int(self, name: str, default: int) -> int:
        value = self._parsed(name, str(default), int, "a whole number")
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
        return value

    def positive_float(self, name: str, default: float) -> float:
        value = self._parsed(name, str(default), float, "a number of seconds")
        if not value > 0:
            raise ConfigError(f"{name} must be more than 0, got {value}")
        return value

    def url(self, name: str, default: str | None = None, schemes: tuple[str, ...] = ("http", "https")) -> str:
        value = self._raw(name, default).rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(f"{name} must be a {' or '.join(schemes)} URL, got {redact_url(value)!r}")
        return value


def load_database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL alone, for the commands that need nothing else."""
    return _Reader(env).url("DATABASE_URL", schemes=("postgres", "postgresql"))


def load_settings(env: Mapping[str, str]) -> Settings:
    """Every setting of `listener run`; raises ConfigError naming the first bad one."""
    read = _Reader(env)
    supabase_url = read.url("SUPABASE_URL")
    storage = StorageConfig(
        endpoint_url=read.url("STORAGE_S3_ENDPOINT", f"{supabase_url}/storage/v1/s3"),
        region=read.text("STORAGE_S3_REGION"),
        access_key_id=read.text("STORAGE_S3_ACCESS_KEY_ID"),
        secret_access_key=read.text("STORAGE_S3_SECRET_ACCESS_KEY"),
        bucket=read.text("STORAGE_BUCKET", "ai-models"),
        public_base_url=supabase_url,
    )
    credentials = read.optional("FIREBASE_CREDENTIALS")
    if credentials is not None and not Path(credentials).is_file():
        raise ConfigError(f"FIREBASE_CREDENTIALS names no readable file: {credentials}")
    fcm_endpoint = read.url("FCM_ENDPOINT") if read.optional("FCM_ENDPOINT") else None
    log_format = read.text("LISTENER_LOG_FORMAT", "json")
    if log_format not in ("json", "text"):
        raise ConfigError(f"LISTENER_LOG_FORMAT must be json or text, got {log_format!r}")
    hosts = read.text("LISTENER_SOURCE_HOSTS", "")
    http_port = read.positive_int("LISTENER_HTTP_PORT", 8080)
    if http_port > 65535:
        raise ConfigError(f"LISTENER_HTTP_PORT must be a TCP port, got {http_port}")
    return Settings(
        database_url=read.url("DATABASE_URL", schemes=("postgres", "postgresql")),
        ai_url=read.url("AI_PYTHON_URL", "http://127.0.0.1:7000"),
        storage=storage,
        firebase_credentials=Path(credentials) if credentials else None,
        fcm_endpoint=fcm_endpoint,
        push_texts=NotificationTexts.from_env(env),
        concurrency=read.positive_int("LISTENER_CONCURRENCY", 50),
        per_user_limit=read.positive_int("LISTENER_PER_USER_LIMIT", 3),
        poll_interval_s=read.positive_float("LISTENER_POLL_INTERVAL", 5.0),
        max_poll_failures=read.positive_int("LISTENER_MAX_POLL_FAILURES", 10),
        generation_timeout_s=read.positive_float("LISTENER_GENERATION_TIMEOUT", 1800.0),
        lease_s=read.positive_float("LISTENER_LEASE_SECONDS", 60.0),
        source_hosts=frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
        http_host=read.text("LISTENER_HTTP_HOST", "0.0.0.0"),
        http_port=http_port,
        log_format=log_format,
        progress_interval_s=read.positive_float("LISTENER_PROGRESS_INTERVAL", 2.0),
        max_file_bytes=read.positive_int("LISTENER_MAX_FILE_BYTES", 1024 * 1024 * 1024),
        spool_dir=Path(read.text("LISTENER_SPOOL_DIR", "/tmp/listener-spool")),
    )

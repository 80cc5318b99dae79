"""Settings: read once from the environment (and a `.env` file) into one frozen object."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from listener.adapters.storage.config import StorageConfig
from listener.errors import ConfigError
from listener.notify.progress_texts import ProgressTexts
from listener.notify.texts import NotificationTexts
from listener.redact import redact_url
from listener.urls import origin_of

T = TypeVar("T")


@dataclass(frozen=True)
class SettingDoc:
    """One environment variable, as `--help` and the README describe it."""

    name: str
    default: str
    meaning: str


# Every variable the listener reads, in the order `listener run --help` lists them.
SETTINGS_DOCS = (
    SettingDoc(
        "DATABASE_URL", "required", "session-pooler or direct Postgres URL (never the transaction pooler)"
    ),
    SettingDoc(
        "LISTENER_DB_POOL_SIZE", "5", "most pool connections per replica (it also holds one for LISTEN)"
    ),
    SettingDoc("AI_PYTHON_URL", "http://127.0.0.1:7000", "the AI server"),
    SettingDoc("SUPABASE_URL", "required", "https://<ref>.supabase.co, for public object URLs"),
    SettingDoc("STORAGE_S3_ENDPOINT", "$SUPABASE_URL/storage/v1/s3", "Storage's S3 endpoint"),
    SettingDoc("STORAGE_S3_REGION", "required", "the project's region"),
    SettingDoc("STORAGE_S3_ACCESS_KEY_ID", "required", "S3 access key"),
    SettingDoc("STORAGE_S3_SECRET_ACCESS_KEY", "required", "S3 secret key"),
    SettingDoc("STORAGE_BUCKET", "ai-models", "the bucket"),
    SettingDoc("FIREBASE_CREDENTIALS", "unset: pushes off", "path to the service-account JSON"),
    SettingDoc("FCM_ENDPOINT", "https://fcm.googleapis.com", "FCM base URL (proxies, tests)"),
    SettingDoc("LISTENER_CONCURRENCY", "50", "rows in flight per replica"),
    SettingDoc("LISTENER_PER_USER_LIMIT", "3", "rows in flight per user, across replicas"),
    SettingDoc("LISTENER_POLL_INTERVAL", "5", "seconds between polls of a task (fractions allowed)"),
    SettingDoc("LISTENER_MAX_POLL_FAILURES", "10", "failed polls in a row before the row fails"),
    SettingDoc("LISTENER_GENERATION_TIMEOUT", "1800", "seconds from submission before the row fails"),
    SettingDoc("LISTENER_LEASE_SECONDS", "60", "how long a claim lasts unless renewed"),
    SettingDoc(
        "LISTENER_SOURCE_HOSTS",
        "empty",
        "comma-separated hosts source images may be fetched from over https (host:port if not 443)",
    ),
    SettingDoc(
        "LISTENER_RESULT_ORIGINS",
        "empty",
        "comma-separated https://host[:port] result files may come from, besides the AI server's own",
    ),
    SettingDoc("LISTENER_HTTP_HOST", "0.0.0.0", "address of /healthz, /readyz, /metrics"),
    SettingDoc("LISTENER_HTTP_PORT", "8080", "their port"),
    SettingDoc(
        "LISTENER_DASHBOARD_TOKEN",
        "unset: dashboard off",
        "the token that opens /dashboard and /api/ on the same port (32 characters or more, random)",
    ),
    SettingDoc(
        "LISTENER_DASHBOARD_ALLOW_HTTP",
        "false",
        "true: the dashboard's session cookie also works over plain HTTP, for browsers on the same machine",
    ),
    SettingDoc("LISTENER_LOG_FORMAT", "json", "json (one object per line) or text"),
    SettingDoc("LISTENER_PROGRESS_INTERVAL", "2", "least seconds between progress writes of a row"),
    SettingDoc("LISTENER_MAX_FILE_BYTES", "1073741824", "largest result file accepted"),
    SettingDoc("LISTENER_SPOOL_DIR", "/tmp/listener-spool", "where results wait between fetch and upload"),
    SettingDoc("LISTENER_STORAGE_HOLD", "21600", "seconds a finished generation waits for Storage to work"),
    SettingDoc(
        "LISTENER_SPOOL_MAX_BYTES", "8589934592", "most bytes all rows in flight may hold in the spool"
    ),
    SettingDoc(
        "LISTENER_PROGRESS_PUSHES",
        "true",
        "false: no lock-screen progress (Live Activity updates, Android progress); the completion push stays",
    ),
    SettingDoc(
        "LISTENER_PROGRESS_PUSH_GAP",
        "20",
        "least seconds between two lock-screen updates of a row (15 to 30; the end is never held back)",
    ),
    SettingDoc(
        "LISTENER_PROGRESS_TEXT_*",
        "the app's texts",
        "TITLE, STARTED_BODY(_EN), GENERATING_BODY(_EN), UPLOADING_BODY(_EN), CANCELLED_TITLE, "
        "CANCELLED_BODY(_EN): templates with {model_name} and {progress}",
    ),
    SettingDoc(
        "LISTENER_PUSH_*",
        "the app's texts",
        "COMPLETE_TITLE, COMPLETE_BODY, COMPLETE_BODY_EN, FAILED_TITLE, FAILED_BODY, FAILED_BODY_EN: "
        "templates with {model_name} and {reason}",
    ),
)


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
    result_origins: frozenset[str] = frozenset()
    spool_max_bytes: int = 8 * 1024**3
    dashboard_token: str | None = field(default=None, repr=False)
    dashboard_allow_http: bool = False
    db_pool_size: int = 5
    storage_hold_s: float = 6 * 3600.0
    progress_pushes: bool = True
    progress_push_gap_s: float = 20.0
    progress_texts: ProgressTexts = field(default_factory=ProgressTexts)


# Apple budgets a Live Activity's updates; one every 15-30 s keeps well within it and is
# all a glance at a lock screen needs.
PROGRESS_PUSH_GAP_RANGE_S = (15.0, 30.0)
TRANSACTION_POOLER_PORT = 6543
# A dashboard token shorter than this could be guessed; 32 characters of token_urlsafe are
# 192 bits.
DASHBOARD_TOKEN_LEAST_CHARS = 32
SUPABASE_POOLER_DOMAIN = ".pooler.supabase.com"


def read_dotenv(path: Path) -> dict[str, str]:
    """The variables of a `.env` file, read as python-dotenv (and so docker compose) reads them.

    Comments, `export `, quotes and multi-line quoted values are understood; a line that
    names a variable without a value is left out.
    """
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def environment(env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> dict[str, str]:
    """The process environment over the `.env` file of the working folder."""
    merged = read_dotenv(dotenv or Path(".env"))
    merged.update(os.environ if env is None else env)
    return merged


class _Reader:
    """Reads settings one by one, collecting every problem, each naming its setting, to report all at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def check(self) -> None:
        """Raises ConfigError listing every problem found, one line each."""
        if self.problems:
            raise ConfigError("\n".join(self.problems))

    def _problem(self, message: str) -> None:
        self.problems.append(message)

    def _raw(self, name: str, default: str | None) -> str | None:
        value = self.env.get(name, "").strip()
        if value:
            return value
        if default is None:
            self._problem(f"{name} is not set")
        return default

    def text(self, name: str, default: str | None = None) -> str:
        return self._raw(name, default) or ""

    def optional(self, name: str) -> str | None:
        return self.env.get(name, "").strip() or None

    def _parsed(self, name: str, default: T, parse: Callable[[str], T], what: str) -> T:
        raw = self._raw(name, str(default))
        try:
            return parse(raw or "")
        except ValueError:
            self._problem(f"{name} must be {what}, got {raw!r}")
            return default

    def positive_int(self, name: str, default: int, *, most: int | None = None) -> int:
        value = self._parsed(name, default, int, "a whole number")
        if value < 1:
            self._problem(f"{name} must be at least 1, got {value}")
        elif most is not None and value > most:
            self._problem(f"{name} must be at most {most}, got {value}")
        return value

    def positive_float(self, name: str, default: float) -> float:
        value = self._parsed(name, default, float, "a number of seconds")
        if not value > 0:
            self._problem(f"{name} must be more than 0, got {value}")
        return value

    def seconds_within(self, name: str, default: float, least: float, most: float) -> float:
        value = self._parsed(name, default, float, "a number of seconds")
        if not least <= value <= most:
            self._problem(f"{name} must be from {least:g} to {most:g} seconds, got {value:g}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name, "true" if default else "false").lower()
        if value not in ("true", "false"):
            self._problem(f"{name} must be true or false, got {value!r}")
        return value == "true"

    def secret(self, name: str, *, least_chars: int) -> str | None:
        value = self.optional(name)
        if value is not None and len(value) < least_chars:
            self._problem(
                f"{name} must be at least {least_chars} characters (it has {len(value)}); make one with "
                'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            self._problem(f"{name} must be {' or '.join(choices)}, got {value!r}")
        return value

    def url(self, name: str, default: str | None = None, schemes: tuple[str, ...] = ("http", "https")) -> str:
        raw = self._raw(name, default)
        if not raw:  # missing: already reported, or its default rests on another missing setting
            return ""
        value = raw.rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            self._problem(f"{name} must be a {' or '.join(schemes)} URL, got {redact_url(value)!r}")
        return value

    def origins(self, name: str) -> frozenset[str]:
        found: set[str] = set()
        for item in self.text(name, "").split(","):
            if not item.strip():
                continue
            origin = origin_of(item.strip())
            if origin is None or urlsplit(item.strip()).path.strip("/"):
                self._problem(
                    f"{name} must list origins such as https://cdn.example:443, got {item.strip()!r}"
                )
            else:
                found.add(origin)
        return frozenset(found)

    def database_url(self) -> str:
        """DATABASE_URL in any form asyncpg takes (a socket folder as `?host=/run/postgresql`
        included), but never Supabase's transaction pooler, where LISTEN does not work."""
        raw = self._raw("DATABASE_URL", None)
        if not raw:
            return ""
        try:
            parts = urlsplit(raw)
            port = parts.port
        except ValueError:
            self._problem(f"DATABASE_URL is not a URL: {redact_url(raw)!r}")
            return raw
        if parts.scheme not in ("postgres", "postgresql"):
            self._problem(f"DATABASE_URL must be a postgres or postgresql URL, got {redact_url(raw)!r}")
        elif port == TRANSACTION_POOLER_PORT and (parts.hostname or "").endswith(SUPABASE_POOLER_DOMAIN):
            self._problem(
                "DATABASE_URL is Supabase's transaction pooler (port 6543), where LISTEN does not work: "
                "use the session pooler (the same host, port 5432) or the direct connection"
            )
        return raw

    def file(self, name: str) -> Path | None:
        value = self.optional(name)
        if value is not None and not Path(value).is_file():
            self._problem(f"{name} names no readable file: {value}")
        return Path(value) if value else None

    def progress_texts(self) -> ProgressTexts:
        try:
            return ProgressTexts.from_env(self.env)
        except ConfigError as exc:
            self._problem(str(exc))
            return ProgressTexts()

    def push_texts(self) -> NotificationTexts:
        try:
            return NotificationTexts.from_env(self.env)
        except ConfigError as exc:
            self._problem(str(exc))
            return NotificationTexts()


def load_database_url(env: Mapping[str, str]) -> str:
    """DATABASE_URL alone, for the commands that need nothing else."""
    read = _Reader(env)
    database_url = read.database_url()
    read.check()
    return database_url


def load_settings(env: Mapping[str, str]) -> Settings:
    """Every setting of `listener run`; raises ConfigError naming every bad one, one per line."""
    read = _Reader(env)
    database_url = read.database_url()
    supabase_url = read.url("SUPABASE_URL")
    storage = StorageConfig(
        endpoint_url=read.url("STORAGE_S3_ENDPOINT", f"{supabase_url}/storage/v1/s3" if supabase_url else ""),
        region=read.text("STORAGE_S3_REGION"),
        access_key_id=read.text("STORAGE_S3_ACCESS_KEY_ID"),
        secret_access_key=read.text("STORAGE_S3_SECRET_ACCESS_KEY"),
        bucket=read.text("STORAGE_BUCKET", "ai-models"),
        public_base_url=supabase_url,
    )
    hosts = read.text("LISTENER_SOURCE_HOSTS", "")
    settings = Settings(
        database_url=database_url,
        ai_url=read.url("AI_PYTHON_URL", "http://127.0.0.1:7000"),
        storage=storage,
        firebase_credentials=read.file("FIREBASE_CREDENTIALS"),
        fcm_endpoint=read.url("FCM_ENDPOINT") if read.optional("FCM_ENDPOINT") else None,
        push_texts=read.push_texts(),
        concurrency=read.positive_int("LISTENER_CONCURRENCY", 50),
        per_user_limit=read.positive_int("LISTENER_PER_USER_LIMIT", 3),
        poll_interval_s=read.positive_float("LISTENER_POLL_INTERVAL", 5.0),
        max_poll_failures=read.positive_int("LISTENER_MAX_POLL_FAILURES", 10),
        generation_timeout_s=read.positive_float("LISTENER_GENERATION_TIMEOUT", 1800.0),
        lease_s=read.positive_float("LISTENER_LEASE_SECONDS", 60.0),
        source_hosts=frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
        http_host=read.text("LISTENER_HTTP_HOST", "0.0.0.0"),
        http_port=read.positive_int("LISTENER_HTTP_PORT", 8080, most=65535),
        log_format=read.choice("LISTENER_LOG_FORMAT", "json", ("json", "text")),
        progress_interval_s=read.positive_float("LISTENER_PROGRESS_INTERVAL", 2.0),
        max_file_bytes=read.positive_int("LISTENER_MAX_FILE_BYTES", 1024 * 1024 * 1024),
        spool_dir=Path(read.text("LISTENER_SPOOL_DIR", "/tmp/listener-spool")),
        result_origins=read.origins("LISTENER_RESULT_ORIGINS"),
        spool_max_bytes=read.positive_int("LISTENER_SPOOL_MAX_BYTES", 8 * 1024**3),
        dashboard_token=read.secret("LISTENER_DASHBOARD_TOKEN", least_chars=DASHBOARD_TOKEN_LEAST_CHARS),
        dashboard_allow_http=read.flag("LISTENER_DASHBOARD_ALLOW_HTTP", False),
        db_pool_size=read.positive_int("LISTENER_DB_POOL_SIZE", 5),
        storage_hold_s=read.positive_float("LISTENER_STORAGE_HOLD", 6 * 3600.0),
        progress_pushes=read.flag("LISTENER_PROGRESS_PUSHES", True),
        progress_push_gap_s=read.seconds_within(
            "LISTENER_PROGRESS_PUSH_GAP", 20.0, *PROGRESS_PUSH_GAP_RANGE_S
        ),
        progress_texts=read.progress_texts(),
    )
    read.check()
    return settings

"""Settings: every configuration name, its default, and one clear line for a bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from listener.app.settings import SETTINGS_DOCS, environment, load_settings, read_dotenv
from listener.errors import ConfigError
from listener.redact import redact_url

BASE = {
    "DATABASE_URL": "postgresql://postgres:s3cret-pw@db.example.supabase.co:5432/postgres",
    "SUPABASE_URL": "https://abc.supabase.co",
    "STORAGE_S3_REGION": "ap-northeast-2",
    "STORAGE_S3_ACCESS_KEY_ID": "key-id",
    "STORAGE_S3_SECRET_ACCESS_KEY": "very-secret-key",
}


def test_defaults_follow_the_spec() -> None:
    settings = load_settings(BASE)
    assert settings.ai_url == "http://127.0.0.1:7000"
    assert settings.storage.endpoint_url == "https://abc.supabase.co/storage/v1/s3"
    assert settings.storage.bucket == "ai-models"
    assert (settings.poll_interval_s, settings.max_poll_failures, settings.generation_timeout_s) == (
        5.0,
        10,
        1800.0,
    )
    assert settings.log_format == "json"
    assert settings.firebase_credentials is None
    assert "s3cret-pw" not in repr(settings) and "very-secret-key" not in repr(settings)


def test_values_are_parsed() -> None:
    settings = load_settings(
        {
            **BASE,
            "LISTENER_POLL_INTERVAL": "0.5",
            "LISTENER_SOURCE_HOSTS": " Images.Example.com, cdn.example ,",
        }
    )
    assert settings.poll_interval_s == 0.5
    assert settings.source_hosts == frozenset({"images.example.com", "cdn.example"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL is not set"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must be a postgres or postgresql URL"),
        ({"LISTENER_CONCURRENCY": "many"}, "LISTENER_CONCURRENCY must be a whole number, got 'many'"),
        ({"LISTENER_CONCURRENCY": "0"}, "LISTENER_CONCURRENCY must be at least 1, got 0"),
        ({"LISTENER_POLL_INTERVAL": "-1"}, "LISTENER_POLL_INTERVAL must be more than 0, got -1.0"),
        ({"LISTENER_LOG_FORMAT": "xml"}, "LISTENER_LOG_FORMAT must be json or text, got 'xml'"),
        (
            {"LISTENER_PROGRESS_PUSH_GAP": "5"},
            "LISTENER_PROGRESS_PUSH_GAP must be from 15 to 30 seconds, got 5",
        ),
        (
            {"LISTENER_PROGRESS_TEXT_GENERATING_BODY": "{name} {progress}%"},
            "LISTENER_PROGRESS_TEXT_GENERATING_BODY is not a template of {model_name} and {progress}",
        ),
        ({"STORAGE_S3_SECRET_ACCESS_KEY": ""}, "STORAGE_S3_SECRET_ACCESS_KEY is not set"),
        ({"FIREBASE_CREDENTIALS": "/nonexistent/sa.json"}, "FIREBASE_CREDENTIALS names no readable file"),
    ],
)
def test_a_bad_setting_is_named(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings({**BASE, **change})


def test_listener_run_with_a_bad_setting_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "listener", "run"],
        env={**BASE, "LISTENER_MAX_POLL_FAILURES": "ten", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "listener: LISTENER_MAX_POLL_FAILURES must be a whole number, got 'ten'"
    ]


def test_passwords_are_redacted() -> None:
    assert (
        redact_url(BASE["DATABASE_URL"]) == "postgresql://postgres:***@db.example.supabase.co:5432/postgres"
    )


def test_dotenv_is_read_as_other_tools_read_it(tmp_path: Path) -> None:
    """Comments after values, quotes, `export` and multi-line values, as docker compose reads them."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n"
        "export A=1\n"
        "B='two words'\n"
        "\n"
        'C="x=y"\n'
        "LISTENER_CONCURRENCY=20  # per replica\n"
        'STORAGE_BUCKET="ai-models" # prod\n'
        'KEY="line one\nline two"\n'
    )
    values = read_dotenv(dotenv)
    assert values == {
        "A": "1",
        "B": "two words",
        "C": "x=y",
        "LISTENER_CONCURRENCY": "20",
        "STORAGE_BUCKET": "ai-models",
        "KEY": "line one\nline two",
    }
    settings = load_settings({**values, **BASE})
    assert (settings.concurrency, settings.storage.bucket) == (20, "ai-models")


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("LISTENER_CONCURRENCY=20\nLISTENER_PER_USER_LIMIT=7\n")
    merged = environment({"LISTENER_CONCURRENCY": "30"}, dotenv)
    assert (merged["LISTENER_CONCURRENCY"], merged["LISTENER_PER_USER_LIMIT"]) == ("30", "7")


def test_every_bad_setting_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "SUPABASE_URL": "https://abc.supabase.co",
                "LISTENER_CONCURRENCY": "many",
                "LISTENER_HTTP_PORT": "70000",
                "LISTENER_LOG_FORMAT": "xml",
            }
        )
    assert str(caught.value).splitlines() == [
        "DATABASE_URL is not set",
        "STORAGE_S3_REGION is not set",
        "STORAGE_S3_ACCESS_KEY_ID is not set",
        "STORAGE_S3_SECRET_ACCESS_KEY is not set",
        "LISTENER_CONCURRENCY must be a whole number, got 'many'",
        "LISTENER_HTTP_PORT must be at most 65535, got 70000",
        "LISTENER_LOG_FORMAT must be json or text, got 'xml'",
    ]


def test_listener_run_with_nothing_set_names_every_missing_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "listener", "run"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"listener: {name} is not set"
        for name in (
            "DATABASE_URL",
            "SUPABASE_URL",
            "STORAGE_S3_REGION",
            "STORAGE_S3_ACCESS_KEY_ID",
            "STORAGE_S3_SECRET_ACCESS_KEY",
        )
    ]


class RecordingEnv(dict[str, str]):
    """An environment that remembers every name asked of it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_every_setting_read_is_documented_in_help_and_readme() -> None:
    env = RecordingEnv(BASE)
    load_settings(env)
    documented = {doc.name for doc in SETTINGS_DOCS}
    undocumented = {
        name
        for name in env.asked
        if name not in documented and not name.startswith(("LISTENER_PUSH_", "LISTENER_PROGRESS_TEXT_"))
    }
    assert undocumented == set()
    templates = {"LISTENER_PUSH_*", "LISTENER_PROGRESS_TEXT_*"}
    assert templates <= documented
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert [name for name in sorted(documented - templates) if f"| `{name}` |" not in readme] == []


POOLER = "postgresql://postgres.abcdefgh:pw@aws-0-ap-northeast-2.pooler.supabase.com"


@pytest.mark.parametrize("command", ["run", "migrate", "status"])
def test_the_transaction_pooler_is_refused_before_connecting(command: str) -> None:
    """LISTEN does not work behind it, and session advisory locks leak across its clients."""
    result = subprocess.run(
        [sys.executable, "-m", "listener", command],
        env={**BASE, "DATABASE_URL": f"{POOLER}:6543/postgres", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "listener: DATABASE_URL is Supabase's transaction pooler (port 6543), where LISTEN does not work: "
        "use the session pooler (the same host, port 5432) or the direct connection"
    ]


@pytest.mark.parametrize(
    "url",
    [
        f"{POOLER}:5432/postgres",  # the session pooler
        "postgresql://app@/postgres?host=/run/postgresql",  # a socket folder
        "postgres:///postgres",  # everything from libpq's defaults
        "postgresql://app:pw@db.abcdefgh.supabase.co:5432/postgres?sslmode=verify-full&sslrootcert=/ca.crt",
    ],
)
def test_every_url_form_asyncpg_takes_is_accepted(url: str) -> None:
    assert load_settings({**BASE, "DATABASE_URL": url}).database_url == url


def test_the_pool_size_and_the_storage_hold_are_read() -> None:
    settings = load_settings({**BASE, "LISTENER_DB_POOL_SIZE": "3", "LISTENER_STORAGE_HOLD": "600"})
    assert (settings.db_pool_size, settings.storage_hold_s) == (3, 600.0)
    assert (load_settings(BASE).db_pool_size, load_settings(BASE).storage_hold_s) == (5, 21600.0)

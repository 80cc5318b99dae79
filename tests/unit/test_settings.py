"""Settings: every configuration name, its default, and one clear line for a bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from listener.errors import ConfigError
from listener.logs import redact_url
from listener.settings import load_settings, read_dotenv

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


def test_passwords_are_redacted_and_dotenv_is_read(tmp_path: pytest.TempPathFactory) -> None:
    assert (
        redact_url(BASE["DATABASE_URL"]) == "postgresql://postgres:***@db.example.supabase.co:5432/postgres"
    )
    dotenv = tmp_path / ".env"  # type: ignore[operator]
    dotenv.write_text("# comment\nexport A=1\nB='two words'\n\nC=\"x=y\"\n")
    assert read_dotenv(dotenv) == {"A": "1", "B": "two words", "C": "x=y"}

"""What may be shown: URLs without their secrets, other systems' words without their internals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.redact import capped, for_users, printable, redact_url, register_secret, scrub, url_secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw-1@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=pw-2&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("http://user:pw-3@ai.internal:7000", "http://user:***@ai.internal:7000"),
        (
            "https://cdn.example/x.glb?token=t-4&X-Amz-Signature=s-5",
            "https://cdn.example/x.glb?token=***&X-Amz-Signature=***",
        ),
        ("http://127.0.0.1:7000", "http://127.0.0.1:7000"),
    ],
)
def test_urls_are_shown_without_their_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for secret in url_secrets(url):
        assert secret not in redact_url(url)


def test_registered_secrets_are_scrubbed_wherever_they_appear() -> None:
    for secret in url_secrets("postgresql://u@h/db?password=only-in-a-param"):
        register_secret(secret)
    assert (
        scrub("connect failed: password=only-in-a-param rejected") == "connect failed: password=*** rejected"
    )


@pytest.mark.parametrize(
    "leak",
    [
        "db-7.internal.corp.com:5432",
        "10.20.30.40",
        "10.20.30.40:6543",
        "fe80::1ff:fe23:4567:890a",
        "admin@example.com",
        "postgres://admin:pw@db:5432/app",
        "https://storage.internal/bucket/x",
    ],
)
def test_what_users_read_names_no_host_or_address(leak: str) -> None:
    shown = for_users(f"Upstream failed while talking to {leak} (retry later)")
    assert leak not in shown
    assert shown.startswith("Upstream failed while talking to")


def test_what_users_read_is_one_short_line() -> None:
    shown = for_users("line one\nline two\x1b[2J " + "x" * 1000)
    assert "\n" not in shown and "\x1b" not in shown
    assert len(shown) <= 300 and shown.endswith("…")


@given(st.text())
def test_for_users_never_passes_control_characters_or_long_text(text: str) -> None:
    shown = for_users(text)
    assert len(shown) <= 300
    assert printable(shown) == shown


@given(st.text())
def test_printable_text_holds_no_control_character_and_loses_nothing(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert len(shown) >= len(text)


def test_log_details_are_capped_in_bytes() -> None:
    assert capped("é" * 5000, max_bytes=100).startswith("é" * 50)
    assert capped("é" * 5000, max_bytes=100).endswith("(10000 bytes)")
    assert capped("short") == "short"

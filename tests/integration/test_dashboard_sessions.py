"""The dashboard's sign-in as an attacker meets it: sessions, guesses, links and other sites' forms."""

from __future__ import annotations

import pytest

from listener.app.dashboard.sessions import MOST_FAILURES
from listener.app.settings import load_settings
from listener.errors import ConfigError
from tests.support.dashboard_client import Answer, answering, ask
from tests.support.stack import DASHBOARD_TOKEN, Stack, running_listener

BEARER = {"Authorization": f"Bearer {DASHBOARD_TOKEN}"}


async def sign_in(port: int, *, headers: dict[str, str] | None = None, source: str | None = None) -> Answer:
    """The sign-in form, sent with the right token (from the loopback address `source`, if given)."""
    return await ask(
        port,
        "/dashboard/sign-in",
        headers,
        method="POST",
        source=source,
        data={"token": DASHBOARD_TOKEN},
    )


def session_of(answer: Answer) -> dict[str, str]:
    """The cookie header that carries the session `answer` opened."""
    return {"Cookie": answer.headers["Set-Cookie"].split(";", 1)[0]}


async def test_every_sign_in_opens_a_session_of_its_own_and_sign_out_ends_it_on_the_server(
    stack: Stack,
) -> None:
    async with running_listener(stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)):
        port = stack.http_port
        await answering(port)
        first, second = session_of(await sign_in(port)), session_of(await sign_in(port))
        before = [(await ask(port, "/api/live", cookie)).status for cookie in (first, second)]
        signed_out = await ask(port, "/dashboard/sign-out", first, method="POST")
        after = [(await ask(port, "/api/live", cookie)).status for cookie in (first, second)]
    assert first != second  # random, not derived from the token
    assert before == [200, 200]
    assert signed_out.status == 303 and "max-age=0" in signed_out.headers["Set-Cookie"].lower()
    assert after == [401, 200]  # the copy of the old cookie no longer opens anything


async def test_sessions_end_with_the_process_that_opened_them(stack: Stack) -> None:
    settings = stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)
    async with running_listener(settings):
        await answering(stack.http_port)
        cookie = session_of(await sign_in(stack.http_port))
        assert (await ask(stack.http_port, "/api/live", cookie)).status == 200
    async with running_listener(settings):
        await answering(stack.http_port)
        assert (await ask(stack.http_port, "/api/live", cookie)).status == 401


async def test_wrong_tokens_from_one_address_are_throttled_and_others_are_not(stack: Stack) -> None:
    async with running_listener(stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)):
        port = stack.http_port
        await answering(port)
        guesses = [
            (await ask(port, "/api/live", {"Authorization": f"Bearer guess-{n}"}, source="127.0.0.7")).status
            for n in range(MOST_FAILURES + 2)
        ]
        right_token_then = await ask(port, "/api/live", BEARER, source="127.0.0.7")
        form_then = await sign_in(port, source="127.0.0.7")
        elsewhere = await ask(port, "/api/live", BEARER, source="127.0.0.8")
    assert guesses == [401] * MOST_FAILURES + [429, 429]
    assert right_token_then.status == 429 and 1 <= int(right_token_then.headers["Retry-After"]) <= 60
    assert form_then.status == 429 and "Too many wrong tokens" in form_then.body
    assert "Set-Cookie" not in form_then.headers
    assert elsewhere.status == 200


async def test_a_sign_in_link_opens_one_session_once_and_the_token_in_an_address_opens_nothing(
    stack: Stack,
) -> None:
    async with running_listener(stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)):
        port = stack.http_port
        await answering(port)
        made = await ask(port, "/api/sign-in-links", BEARER, method="POST")
        path = str(made.json()["path"])
        used = await ask(port, path)
        used_again = await ask(port, path)
        token_in_address = await ask(port, f"/dashboard?token={DASHBOARD_TOKEN}")
        without_token = await ask(port, "/api/sign-in-links", method="POST")
        live = await ask(port, "/api/live", session_of(used))
    assert made.status == 201 and made.json()["expires_in_s"] == 600
    assert str(made.json()["url"]).endswith(path) and DASHBOARD_TOKEN not in path
    assert used.status == 303 and used.headers["Location"] == "/dashboard"
    assert live.status == 200
    assert used_again.status == 401 and "used already or has expired" in used_again.body
    assert "Set-Cookie" not in used_again.headers
    assert token_in_address.status == 401 and "Set-Cookie" not in token_in_address.headers
    assert without_token.status == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
    ],
)
async def test_forms_posted_from_another_sites_page_are_refused(
    stack: Stack, headers: dict[str, str]
) -> None:
    async with running_listener(stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN)):
        port = stack.http_port
        await answering(port)
        cookie = session_of(await sign_in(port))
        forged_sign_in = await sign_in(port, headers=headers)
        forged_sign_out = await ask(port, "/dashboard/sign-out", {**cookie, **headers}, method="POST")
        own_sign_in = await sign_in(
            port, headers={"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
        )
        still_signed_in = await ask(port, "/api/live", cookie)
    assert forged_sign_in.status == 403 and "Set-Cookie" not in forged_sign_in.headers
    assert forged_sign_out.status == 403
    assert own_sign_in.status == 303
    assert still_signed_in.status == 200


async def test_the_cookie_goes_without_secure_only_when_allowed_and_to_a_browser_on_this_machine(
    stack: Stack,
) -> None:
    settings = stack.settings(LISTENER_DASHBOARD_TOKEN=DASHBOARD_TOKEN, LISTENER_DASHBOARD_ALLOW_HTTP="true")
    async with running_listener(settings):
        await answering(stack.http_port)
        here = await sign_in(stack.http_port)
    attributes = {part.strip().lower() for part in here.headers["Set-Cookie"].split(";")}
    assert "secure" not in attributes and "httponly" in attributes


@pytest.mark.parametrize("token", ["x", "a" * 31])
def test_a_short_dashboard_token_stops_the_start_with_a_clear_reason(stack: Stack, token: str) -> None:
    with pytest.raises(ConfigError, match="LISTENER_DASHBOARD_TOKEN must be at least 32 characters"):
        load_settings(stack.env(LISTENER_DASHBOARD_TOKEN=token))

"""Who may see the dashboard: a bearer token, or the cookie its sign-in form sets."""

from __future__ import annotations

import hashlib
import hmac
from functools import cache
from importlib import resources

from aiohttp import web

COOKIE = "listener_dashboard"
COOKIE_MAX_AGE_S = 7 * 24 * 3600
REALM = 'Bearer realm="listener dashboard"'
# What every answer of the dashboard carries: nothing cached, nothing framed or sniffed, no
# referrer leaving the page, and only the page's own files may run or load.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SIGN_IN_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'"
)
SAFE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
WRONG_TOKEN = '<p class="wrong" role="alert">That is not the dashboard\'s token.</p>'


class TokenGate:
    """Checks requests against the dashboard's token, always in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        # The cookie holds a value derived from the token, not the token: a new token ends old sessions.
        self._session = hmac.new(self._token, b"listener dashboard session", hashlib.sha256).hexdigest()

    def is_token(self, given: str | None) -> bool:
        """True when `given` is the token."""
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    def allows(self, request: web.BaseRequest) -> bool:
        """True for a request with the token as its bearer, or else with the sign-in cookie."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            return scheme.lower() == "bearer" and self.is_token(value.strip())
        session = request.cookies.get(COOKIE)
        return session is not None and hmac.compare_digest(session.encode(), self._session.encode())

    def sign_in(self, response: web.StreamResponse, request: web.BaseRequest) -> None:
        """Sets the session cookie on `response`: HttpOnly, SameSite=Strict, Secure over HTTPS."""
        response.set_cookie(
            COOKIE,
            self._session,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )

    @staticmethod
    def sign_out(response: web.StreamResponse) -> None:
        """Removes the session cookie."""
        response.del_cookie(COOKIE, path="/")


@cache
def _sign_in_html() -> str:
    page = resources.files("listener.dashboard").joinpath("static", "sign-in.html")
    return page.read_text(encoding="utf-8")


def sign_in_page(wrong: bool = False) -> web.Response:
    """The 401 answer a person gets without the token: the sign-in form, and no data."""
    html = _sign_in_html()
    return web.Response(
        status=401,
        text=html.replace("<!--message-->", WRONG_TOKEN if wrong else ""),
        content_type="text/html",
        headers={"WWW-Authenticate": REALM, "Content-Security-Policy": SIGN_IN_POLICY},
    )


def refused() -> web.Response:
    """The 401 answer of the API without the token."""
    return web.json_response(
        {"error": "sign in: send the dashboard's token as `Authorization: Bearer <token>`"},
        status=401,
        headers={"WWW-Authenticate": REALM},
    )

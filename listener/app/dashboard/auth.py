"""Who may see the dashboard: the token as a bearer, or a session that a sign-in opened.

Sessions are random, held by this process and lost when it restarts (sign in again then);
each replica holds its own. A session ends on the server after `SESSION_LIFETIME_S` or at
sign-out. Wrong tokens are counted per client address, and an address that sent too many
is refused for a while, even with the right token.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from listener.app.dashboard.sessions import FailedAttempts, IssuedSecrets

COOKIE = "listener_dashboard"
SESSION_LIFETIME_S = 7 * 24 * 3600
SIGN_IN_LINK_LIFETIME_S = 600
# Sessions and links one process holds at most; past that the oldest go first.
MOST_SESSIONS = 1000
MOST_SIGN_IN_LINKS = 100
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
USED_LINK = '<p class="wrong" role="alert">This sign-in link was used already or has expired.</p>'
# What a browser says of a request sent by a page of this origin, or typed by its user.
OWN_FETCH_SITES = ("same-origin", "none")


class Access(enum.Enum):
    """What a request's credentials earned it."""

    GRANTED = "granted"
    REFUSED = "refused"
    THROTTLED = "throttled"  # too many wrong tokens from its address


class TokenGate:
    """Checks requests against the dashboard's token and sessions, the token always in constant time."""

    def __init__(self, token: str, *, allow_http: bool = False) -> None:
        self._token = token.encode()
        self._allow_http = allow_http
        self.sessions = IssuedSecrets(SESSION_LIFETIME_S, MOST_SESSIONS)
        self.sign_in_links = IssuedSecrets(SIGN_IN_LINK_LIFETIME_S, MOST_SIGN_IN_LINKS)
        self.failed = FailedAttempts()

    def check_token(self, request: web.BaseRequest, given: str | None) -> Access:
        """Whether `given` is the token, counting a wrong one against the request's address."""
        address = client_address(request)
        if self.failed.throttled(address):
            return Access.THROTTLED
        if given is not None and hmac.compare_digest(given.encode(), self._token):
            return Access.GRANTED
        self.failed.record(address)
        return Access.REFUSED

    def check(self, request: web.BaseRequest) -> Access:
        """A request with the token as its bearer, or else with the cookie of an open session."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            return self.check_token(request, value.strip() if scheme.lower() == "bearer" else None)
        session = request.cookies.get(COOKIE)
        # Session ids are 256 random bits: a wrong one is stale, not a guess, and is not counted.
        return Access.GRANTED if session is not None and self.sessions.holds(session) else Access.REFUSED

    def sign_in(self, response: web.StreamResponse, request: web.BaseRequest) -> None:
        """Opens a session and sets its cookie on `response`: HttpOnly, SameSite=Strict, Secure."""
        response.set_cookie(
            COOKIE,
            self.sessions.issue(),
            max_age=SESSION_LIFETIME_S,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=not (self._allow_http and not request.secure and _is_loopback(client_address(request))),
        )

    def sign_out(self, response: web.StreamResponse, request: web.BaseRequest) -> None:
        """Ends the request's session on the server and removes its cookie."""
        session = request.cookies.get(COOKIE)
        if session is not None:
            self.sessions.revoke(session)
        response.del_cookie(COOKIE, path="/")


def client_address(request: web.BaseRequest) -> str:
    """The address the request came from (a proxy's, behind one: forwarded headers can be forged)."""
    return request.remote or "unknown"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def from_own_pages(request: web.BaseRequest) -> bool:
    """False for a form another site's page posted: its browser says so in `Sec-Fetch-Site` or `Origin`."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in OWN_FETCH_SITES
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser's cross-site form (those send one of the two), e.g. curl
        return True
    return origin != "null" and urlsplit(origin).netloc.lower() == request.host.lower()


@cache
def _sign_in_html() -> str:
    page = resources.files("listener.app.dashboard").joinpath("static", "sign-in.html")
    return page.read_text(encoding="utf-8")


def sign_in_page(message: str = "", status: int = 401, **headers: str) -> web.Response:
    """The 401 answer a person gets without the token: the sign-in form, and no data."""
    return web.Response(
        status=status,
        text=_sign_in_html().replace("<!--message-->", message),
        content_type="text/html",
        headers={"WWW-Authenticate": REALM, "Content-Security-Policy": SIGN_IN_POLICY, **headers},
    )


def refused() -> web.Response:
    """The 401 answer of the API without the token."""
    return web.json_response(
        {"error": "sign in: send the dashboard's token as `Authorization: Bearer <token>`"},
        status=401,
        headers={"WWW-Authenticate": REALM},
    )


def throttled(gate: TokenGate, request: web.BaseRequest, *, page: bool = False) -> web.Response:
    """The 429 answer to an address that sent too many wrong tokens (the sign-in form if `page`)."""
    wait_s = gate.failed.wait_s(client_address(request))
    message = f"too many wrong tokens from this address; try again in {wait_s} s"
    if page:
        paragraph = f'<p class="wrong" role="alert">{message[0].upper()}{message[1:]}.</p>'
        return sign_in_page(paragraph, 429, **{"Retry-After": str(wait_s)})
    return web.json_response({"error": message}, status=429, headers={"Retry-After": str(wait_s)})


def cross_site() -> web.Response:
    """The 403 answer to a form posted from another site's page."""
    return web.json_response(
        {"error": "this form may be sent only from the dashboard's own pages"}, status=403
    )

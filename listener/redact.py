"""What may be shown, and to whom: secrets out of every line, internals out of what users read.

- `register_secret` and `scrub`: a value registered once never appears in a log line, an
  error or a command's output (the log formatters and `listener status` scrub).
- `redact_url`: a URL with its password and secret parameters replaced, safe to show.
- `for_users`: a text from another system (the AI provider's reason for a failure), cut
  short and rid of hosts, addresses and control characters, fit for `error_message`.
- `printable`: a text from the database, with control characters escaped, safe to print
  on an operator's terminal.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

REDACTED = "***"
# Query parameters that carry secrets (libpq's `password`, tokens and keys of HTTP APIs).
_SECRET_PARAMS = re.compile(
    r"(.*[-_])?(pass(word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|signature|credential)", re.I
)
# Hosts, addresses and locations another system's message may leak.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(\.[\w-]+)+\b")
_IPV4 = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b")
_IPV6 = re.compile(r"\b([0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}\b", re.I)
# Any dotted name that ends in letters (a host, though a file name may be hidden too), and
# any name with a port.
_HOSTNAME = re.compile(r"\b([a-z0-9-]+\.)+[a-z]{2,24}\b(:\d+)?", re.I)
_HOST_PORT = re.compile(r"\b[\w.-]+:\d{2,5}\b")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")

_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never print this value: it is replaced by *** wherever it would appear."""
    if value and len(value) >= 4:
        _secrets.add(value)


def scrub(text: str) -> str:
    """The text with every registered secret replaced."""
    for secret in _secrets:
        text = text.replace(secret, REDACTED)
    return text


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: its password, and the values of secret parameters."""
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [value for name, value in parse_qsl(parts.query) if _SECRET_PARAMS.fullmatch(name) and value]
    return found


def redact_url(url: str) -> str:
    """The URL with its password and secret parameters replaced, safe to log or show."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", f":{REDACTED}@", 1)
    query = parts.query
    params = parse_qsl(query, keep_blank_values=True)
    if any(_SECRET_PARAMS.fullmatch(name) for name, _ in params):
        query = urlencode(
            [(name, REDACTED if _SECRET_PARAMS.fullmatch(name) else value) for name, value in params],
            safe="*",
        )
    return parts._replace(netloc=netloc, query=query).geturl()


def for_users(text: str, max_chars: int = 300) -> str:
    """Another system's message made fit for a person: no hosts or addresses, one line, short."""
    text = scrub(text)
    for pattern in (_URL, _EMAIL, _IPV4, _IPV6, _HOSTNAME, _HOST_PORT):
        text = pattern.sub("[hidden]", text)
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text


def capped(text: str, max_bytes: int = 2048) -> str:
    """A scrubbed text no longer than `max_bytes` in UTF-8, for a log line."""
    text = scrub(text)
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore") + f"… ({len(encoded)} bytes)"


def printable(text: str) -> str:
    """The text with control characters (escape codes, newlines, bidi overrides) shown as escapes."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)

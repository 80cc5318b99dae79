"""Source images at a URL: fetched over https from public addresses only, with plain words for a failure.

Validation lets through only https URLs on `LISTENER_SOURCE_HOSTS` (and their ports). This
module checks the address itself, when the connection is made: a name that resolves to a
private, loopback, link-local or otherwise non-public address is not connected to. The
check sits in the resolver the connection uses, so a name that answers a public address to
one lookup and a private one to the next (DNS rebinding) cannot slip between a check and
the connection.

What the owner reads of a failure says nothing of the network (no status, no port, no
address): an image URL must not become a way to probe what the listener can reach.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from listener.adapters.downloads import download
from listener.errors import (
    AddressNotPublic,
    FileGone,
    FileTooLarge,
    PermanentError,
    SpoolUnavailable,
    TransientError,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=10, sock_read=30)
NOT_FETCHED = "The source image could not be fetched from its URL."
NOT_ANSWERING = "the source image's host did not answer"


def is_public(address: IPAddress) -> bool:
    """True for an address on the public internet (not private, loopback, link-local, reserved...)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class PublicAddressResolver(AbstractResolver):
    """Resolves as usual, then keeps only the addresses that are public (or in `also_allowed`)."""

    def __init__(self, also_allowed: Sequence[IPNetwork] = ()) -> None:
        self._inner = DefaultResolver()
        self._also_allowed = tuple(also_allowed)

    def allows(self, host: str) -> bool:
        """True for an address the listener may connect to."""
        address = ipaddress.ip_address(host)
        return is_public(address) or any(address in network for network in self._also_allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host` that may be connected to; AddressNotPublic if there are none."""
        allowed = [
            found for found in await self._inner.resolve(host, port, family) if self.allows(found["host"])
        ]
        if not allowed:
            raise AddressNotPublic(f"{host} has no public address")
        return allowed

    async def close(self) -> None:
        """Closes the resolver underneath."""
        await self._inner.close()


class SourceImageFetcher:
    """Fetches source images by URL on a session of its own; `fetch` is the core's `UrlFetcher`."""

    def __init__(
        self, *, also_allowed: Sequence[IPNetwork] = (), ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._resolver = PublicAddressResolver(also_allowed)
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SourceImageFetcher:
        connector = aiohttp.TCPConnector(resolver=self._resolver, ssl=self._ssl, limit=32)
        # No proxy from the environment: the address checked must be the address connected to.
        self._session = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT, trust_env=False)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, url: str, dest: Path, max_bytes: int) -> int:
        """Writes the image at `url` to `dest`; returns its size. Errors carry no network details."""
        assert self._session is not None, "use the fetcher inside `async with`"
        host = urlsplit(url).hostname or ""
        if _is_address(host) and not self._resolver.allows(host):
            raise PermanentError(NOT_FETCHED)  # an address literal never meets the resolver
        try:
            return await download(self._session, url, dest, max_bytes, what="source image")
        except (FileTooLarge, SpoolUnavailable):
            raise  # about the file's size or the listener's disk, not the network
        except FileGone as exc:
            raise PermanentError(NOT_FETCHED) from exc
        except TransientError as exc:
            if _caused_by(exc, AddressNotPublic):
                raise PermanentError(NOT_FETCHED) from exc
            raise TransientError(NOT_ANSWERING) from exc
        except PermanentError as exc:  # the host answered something other than the image
            raise PermanentError(NOT_FETCHED) from exc


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: Any = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False

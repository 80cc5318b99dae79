"""Source images by URL against a real TLS server on loopback: public addresses only, plain words only."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from listener.adapters.source_images import NOT_ANSWERING, NOT_FETCHED, SourceImageFetcher, is_public
from listener.errors import FileTooLarge, PermanentError, TransientError
from listener.playground.embedded import free_port
from tests.support.certificates import write_self_signed

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@dataclass
class ImageHost:
    """An https server on 127.0.0.1 and `localhost`, with a certificate a client may choose to trust."""

    port: int
    trust: ssl.SSLContext
    asked: list[str]


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    cert_path, key_path = folder / "host.pem", folder / "host.key"
    write_self_signed(cert_path, key_path)
    return cert_path, key_path


@pytest.fixture
async def image_host(tmp_path: Path) -> AsyncIterator[ImageHost]:
    asked: list[str] = []

    async def serve(request: web.Request) -> web.Response:
        asked.append(request.path)
        statuses = {"/missing.png": 404, "/secret.png": 403, "/busy.png": 503}
        if request.path in statuses:
            return web.Response(status=statuses[request.path], text="no")
        return web.Response(body=PNG, content_type="image/png")

    cert, key = _certificate(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_side)
    await site.start()
    yield ImageHost(runner.addresses[0][1], ssl.create_default_context(cafile=str(cert)), asked)
    await runner.cleanup()


async def test_a_host_on_a_loopback_address_is_never_connected_to_by_name_or_by_address(
    image_host: ImageHost, tmp_path: Path
) -> None:
    async with SourceImageFetcher(ssl_context=image_host.trust) as fetcher:
        for host in ("localhost", "127.0.0.1", "[::ffff:127.0.0.1]"):
            with pytest.raises(PermanentError) as refused:
                await fetcher.fetch(f"https://{host}:{image_host.port}/cat.png", tmp_path / "cat.png", 10_000)
            assert str(refused.value) == NOT_FETCHED
    assert image_host.asked == []


async def test_an_allowed_host_is_fetched_and_its_refusals_say_nothing_of_the_network(
    image_host: ImageHost, tmp_path: Path
) -> None:
    """The same fetcher, told that loopback may be reached, as a listener on a private network would be."""
    base = f"https://localhost:{image_host.port}"
    async with SourceImageFetcher(also_allowed=LOOPBACK, ssl_context=image_host.trust) as fetcher:
        size = await fetcher.fetch(f"{base}/cat.png", tmp_path / "cat.png", 10_000)
        answers = []
        for path in ("/missing.png", "/secret.png"):
            with pytest.raises(PermanentError) as refused:
                await fetcher.fetch(f"{base}{path}", tmp_path / "x.png", 10_000)
            answers.append(str(refused.value))
        with pytest.raises(TransientError) as busy:
            await fetcher.fetch(f"{base}/busy.png", tmp_path / "x.png", 10_000)
        with pytest.raises(TransientError) as closed:
            await fetcher.fetch(f"https://localhost:{free_port()}/cat.png", tmp_path / "x.png", 10_000)
        with pytest.raises(FileTooLarge):
            await fetcher.fetch(f"{base}/cat.png", tmp_path / "x.png", 100)
    assert size == len(PNG) and (tmp_path / "cat.png").read_bytes() == PNG
    assert answers == [NOT_FETCHED, NOT_FETCHED]
    assert str(busy.value) == str(closed.value) == NOT_ANSWERING
    for said in [*answers, str(busy.value), str(closed.value)]:
        assert str(image_host.port) not in said and "404" not in said and "403" not in said


async def test_a_certificate_that_is_not_trusted_is_refused(image_host: ImageHost, tmp_path: Path) -> None:
    async with SourceImageFetcher(also_allowed=LOOPBACK) as fetcher:  # the system's trust only
        with pytest.raises(TransientError) as refused:
            await fetcher.fetch(f"https://localhost:{image_host.port}/cat.png", tmp_path / "x.png", 10_000)
    assert str(refused.value) == NOT_ANSWERING


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.10", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),  # a cloud's metadata service
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:10.0.0.1", False),
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_only_addresses_on_the_public_internet_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public

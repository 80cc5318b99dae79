"""The real Supabase Storage server, built from its vendored source: skipped where that is absent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.storage_build import build, find_source
from tests.support.storage_server import RealStorage


@pytest.fixture(scope="session")
def real_storage(pg_admin_dsn: str) -> Iterator[RealStorage]:
    """One Storage server for the session, with its own database on the tests' Postgres."""
    source = find_source()
    if source is None:
        pytest.skip(
            "the real Storage server's source is absent: these tests need "
            "supabase-storage-*.tar.gz in ../shared/vendor/ beside the project, "
            "or its path in LISTENER_STORAGE_SOURCE"
        )
    with RealStorage(build(source), pg_admin_dsn) as server:
        yield server


@pytest.fixture(autouse=True)
def _trust_the_gateway(real_storage: RealStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore (the listener's client and boto3) trusts the gateway's self-signed certificate."""
    monkeypatch.setenv("AWS_CA_BUNDLE", str(real_storage.ca_file))


@pytest.fixture
async def bucket(real_storage: RealStorage) -> AsyncIterator[str]:
    """A public bucket of this test's own, without limits; deleted afterwards if it still exists."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    await real_storage.create_bucket(name)
    yield name
    try:
        await real_storage.delete_bucket(name)
    except Exception as exc:  # deleted by the test itself
        if "NoSuchBucket" not in repr(getattr(exc, "response", exc)):
            raise

"""The environment of a listener wired to neighbours on this machine (demo, tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from listener.adapters.storage.config import StorageConfig
from listener.playground.embedded import free_port


def local_env(
    database_url: str, ai_url: str, storage: StorageConfig, spool_dir: Path, **settings: str
) -> dict[str, str]:
    """What `listener run` reads, pointed at local stand-ins; `settings` add or replace variables."""
    env = {
        "DATABASE_URL": database_url,
        "AI_PYTHON_URL": ai_url,
        "SUPABASE_URL": storage.public_base_url,
        "STORAGE_S3_ENDPOINT": storage.endpoint_url,
        "STORAGE_S3_REGION": storage.region,
        "STORAGE_S3_ACCESS_KEY_ID": storage.access_key_id,
        "STORAGE_S3_SECRET_ACCESS_KEY": storage.secret_access_key,
        "STORAGE_BUCKET": storage.bucket,
        "LISTENER_SPOOL_DIR": str(spool_dir),
        # Health and metrics on loopback, on a port of their own.
        "LISTENER_HTTP_HOST": "127.0.0.1",
        "LISTENER_HTTP_PORT": str(free_port()),
    }
    env.update(settings)
    return env

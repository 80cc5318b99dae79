"""Where Storage is and how to sign requests to it: read by the settings, used by the S3 adapter."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StorageConfig:
    """Where Storage is and how to sign requests to it."""

    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    bucket: str
    public_base_url: str
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    request_timeout_s: float = 300.0  # bounds one request: a PutObject, a part, a download

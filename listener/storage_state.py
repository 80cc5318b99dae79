"""Whether Storage can take uploads now, and the bucket's own limits: what a row waits on to upload."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketLimits:
    """What the bucket itself accepts (Supabase's storage.buckets); None: no limit of its own."""

    file_size_limit: int | None = None
    allowed_mime_types: frozenset[str] | None = None

    def refuses_type(self, content_type: str) -> bool:
        """True when the bucket lists its allowed types and `content_type` is not among them."""
        if not self.allowed_mime_types:
            return False
        family = content_type.split("/")[0] + "/*"
        return content_type not in self.allowed_mime_types and family not in self.allowed_mime_types


class StorageState:
    """Set by the replica's Storage check; rows read it, and wait while Storage cannot be used."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.limits = BucketLimits()
        self._usable = asyncio.Event()
        self._usable.set()
        self._unusable = asyncio.Event()

    @property
    def usable(self) -> bool:
        """True unless the last check found a problem."""
        return self.problem is None

    def update(self, problem: str | None, limits: BucketLimits | None = None) -> bool:
        """Records a check's finding; True when usability changed."""
        changed = (problem is None) != (self.problem is None)
        self.problem = problem
        if limits is not None:
            self.limits = limits
        if problem is None:
            self._usable.set()
            self._unusable.clear()
        else:
            self._usable.clear()
            self._unusable.set()
        return changed

    async def wait_usable(self) -> None:
        """Returns once Storage can be used (at once when it can)."""
        await self._usable.wait()

    async def wait_unusable(self) -> None:
        """Returns once something found Storage unusable (a row's upload, or a check)."""
        await self._unusable.wait()

"""Whether Storage can take uploads now, and the bucket's own limits: what a row waits on to upload."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from listener.core.availability import Availability
from listener.sizes import human_size


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

    def refusal(self, bucket: str, what: str, content_type: str, size: float | None = None) -> str | None:
        """Why the bucket would refuse this file, in words (no full stop); None when it would take it."""
        if self.refuses_type(content_type):
            return f"the bucket {bucket} does not accept {what}s ({content_type} is not an allowed type)"
        if self.file_size_limit is not None and size is not None and size > self.file_size_limit:
            return (
                f"the {what} is {human_size(int(size))}, more than the "
                f"{human_size(self.file_size_limit)} the bucket {bucket} accepts"
            )
        return None


# Reads the bucket's limits now; None where they cannot be read (the last known ones hold).
LimitsReader = Callable[[], Awaitable[BucketLimits | None]]


class StorageState(Availability):
    """Set by the replica's Storage check; rows read it, and wait while Storage cannot be used."""

    def __init__(self) -> None:
        super().__init__()
        self.limits = BucketLimits()
        # Set by the replica's Storage check: how a row that meets a refusal reads the limits anew.
        self.read_limits: LimitsReader | None = None

    def update(self, problem: str | None, limits: BucketLimits | None = None) -> bool:
        """Records a check's finding; True when usability changed."""
        if limits is not None:
            self.limits = limits
        return self.set_problem(problem)

    async def reread_limits(self) -> BucketLimits:
        """The bucket's limits read again now, for every row (the last known where they cannot be read)."""
        if self.read_limits is not None:
            limits = await self.read_limits()
            if limits is not None:
                self.limits = limits
        return self.limits

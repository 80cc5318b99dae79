"""Whether Storage can take uploads now, and the bucket's own limits: what a row waits on to upload."""

from __future__ import annotations

from dataclasses import dataclass

from listener.core.reachability import Reachability


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


class StorageState(Reachability):
    """Set by the replica's Storage check; rows read it, and wait while Storage cannot be used."""

    def __init__(self) -> None:
        super().__init__()
        self.limits = BucketLimits()

    def update(self, problem: str | None, limits: BucketLimits | None = None) -> bool:
        """Records a check's finding; True when usability changed."""
        if limits is not None:
            self.limits = limits
        return self.set_problem(problem)

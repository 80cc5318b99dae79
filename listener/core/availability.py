"""Whether a neighbour can be used now, and why not: rows and loops wait on it instead of failing."""

from __future__ import annotations

import asyncio


class Availability:
    """Set by the replica's checks and by what rows meet; waited on while there is a problem."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self._usable = asyncio.Event()
        self._usable.set()
        self._unusable = asyncio.Event()

    @property
    def usable(self) -> bool:
        """True unless the last finding was a problem."""
        return self.problem is None

    def set_problem(self, problem: str | None) -> bool:
        """Records a finding (None: it works); True when usability changed."""
        changed = (problem is None) != (self.problem is None)
        self.problem = problem
        if problem is None:
            self._usable.set()
            self._unusable.clear()
        else:
            self._usable.clear()
            self._unusable.set()
        return changed

    async def wait_usable(self) -> None:
        """Returns once it can be used (at once when it can)."""
        await self._usable.wait()

    async def wait_unusable(self) -> None:
        """Returns once something found it unusable."""
        await self._unusable.wait()

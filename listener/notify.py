"""The seam where a finished row is told to its owner (the push and the in-app notification)."""

from __future__ import annotations

import logging
from typing import Protocol

from listener.db import FinishedModel

log = logging.getLogger(__name__)


class Notifier(Protocol):
    async def model_finished(self, model: FinishedModel) -> None:
        """Tells the owner that `model` reached a terminal status; never raises."""


class LogNotifier:
    """Writes the news to the log only: used where pushes are off."""

    async def model_finished(self, model: FinishedModel) -> None:
        """Logs the terminal status instead of sending it."""
        log.info(
            "push_logged",
            extra={
                "model_id": str(model.model_id),
                "user_id": str(model.user_id),
                "status": model.status,
                "model_name": model.model_name,
                "error_message": model.error_message,
            },
        )

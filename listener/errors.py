"""The project's exceptions: one root, and a split between what is worth retrying and what is not."""

from __future__ import annotations


class ListenerError(Exception):
    """Root of every error the listener raises on purpose."""


class ConfigError(ListenerError):
    """A setting is missing or malformed; the message names it."""


class TransientError(ListenerError):
    """A failure worth retrying: a lost connection, a timeout, a 5xx or 429 answer."""


class PermanentError(ListenerError):
    """A failure that ends the row as `failed`; the message is the reason a person reads."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        # A short class of the reason for metrics (timeout, upstream, ...); None: the failing step's name.
        self.kind = kind

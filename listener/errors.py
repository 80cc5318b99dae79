"""Every exception the listener raises on purpose, in one tree.

    ListenerError                 root; the core catches nothing wider
    ├── ConfigError               a setting is missing or malformed (settings.py, notify/texts.py);
    │                             the command line prints it and exits 2
    ├── StatusUnavailable         `listener status` could not ask the database (status.py)
    ├── MigrationBlocked          `listener migrate` could not get its locks: sessions of the
    │                             app hold them (migrate.py); the message names them
    ├── MigrationRefused          the role may not apply the migrations (it does not own the
    │                             app's table); nothing was changed (migrate.py)
    ├── AddressNotPublic          a source image's host resolves to no public address
    │                             (source_images.py); also an OSError, so that the HTTP client
    │                             fails the connection; the row fails in plain words
    ├── LeaseLost                 the row is no longer this replica's: cancelled, deleted or taken
    │                             over (raised by generation.py when a write finds the job gone);
    │                             the row's coroutine stops without writing
    ├── TransientError            worth trying again: a lost connection, a timeout, 5xx or 429.
    │   │                         Adapters raise it; retry.py retries it; when the retries run
    │   │                         out, generation.py turns it into a PermanentError
    │   ├── DatabaseUnavailable   Postgres unreachable or the connection dropped (db.py); a row
    │   │                         that meets it is handed back to be claimed again, not failed
    │   ├── UnknownTask           the AI server answered 500 for a task (ai_client.py)
    │   ├── AIServerUnreachable   a submission could not reach the AI server, or it kept
    │   │                         refusing for now (ai_client.py, generation.py): nothing was
    │   │                         started, so the row is handed back and claims pause
    │   ├── FileGone              a result file answered 404: served once, then deleted
    │   │                         (downloads.py); generation.py polls again for a fresh URL
    │   ├── TransferStalled       a file came slower than the least rate (downloads.py);
    │   │                         asked for again once through a fresh poll
    │   ├── SpoolUnavailable      the local disk could not take a file (full, failing);
    │   │                         the row waits and asks for the file again, it does not fail
    │   └── PushUndelivered       some push messages met a retryable error (notify/notifier.py)
    └── PermanentError            ends the row as `failed`; its message is the sentence the
        │                         owner reads in `error_message` and in the push
        └── FileTooLarge          a file larger than the limit it was fetched under (downloads.py)

Adapters translate their SDK's exceptions at the edge (`raise TransientError(...) from exc`),
so nothing above them sees an asyncpg, aiohttp, botocore or firebase error.
"""

from __future__ import annotations

import enum


class FailureKind(enum.StrEnum):
    """Why a row failed, in a word (the `reason` label of `listener_rows_failed_total`): the
    step it failed in, or a cause that cuts across steps."""

    VALIDATE = "validate"
    SUBMIT = "submit"
    POLL = "poll"
    FETCH = "fetch"
    UPLOAD = "upload"
    UPSTREAM = "upstream"  # the AI server failed or cancelled the generation
    TIMEOUT = "timeout"
    # Storage is set up wrongly (keys, bucket, region) rather than the file being wrong: a
    # row that meets it waits for Storage to be fixed.
    STORAGE_SETUP = "storage_setup"
    # The bucket's own limits (size, file types) refused a file: the limits are read again at
    # once, and the row's message says which one.
    BUCKET_LIMIT = "bucket_limit"
    GIVEN_UP = "given_up"  # claimed too often without finishing: its replicas died each time
    INTERNAL = "internal"  # a bug


STORAGE_SETUP = FailureKind.STORAGE_SETUP
BUCKET_LIMIT = FailureKind.BUCKET_LIMIT


class ListenerError(Exception):
    """Root of every error the listener raises on purpose."""


class ConfigError(ListenerError):
    """A setting is missing or malformed; the message names it."""


class StatusUnavailable(ListenerError):
    """The database could not be asked for the status; the message is one line, safe to print."""


class MigrationBlocked(ListenerError):
    """A migration could not get its locks in time; the message names the sessions that hold them."""


class MigrationRefused(ListenerError):
    """The role may not apply the migrations; checked before anything is changed."""


class LeaseLost(ListenerError):
    """The job is no longer this replica's: cancelled, deleted, or taken over."""


class TransientError(ListenerError):
    """A failure worth retrying: a lost connection, a timeout, a 5xx or 429 answer."""


class DatabaseUnavailable(TransientError):
    """The database could not be reached or dropped the connection."""


class UnknownTask(TransientError):
    """The AI server answered 500 for the task: it does not know it (or failed internally)."""


class AIServerUnreachable(TransientError):
    """The AI server could not take a submission now (refused the connection, or kept answering 5xx)."""


class FileGone(TransientError):
    """The server answered 404: a result file it served once and deleted."""


class TransferStalled(TransientError):
    """A transfer moved slower than the least rate over a whole window: abandoned."""


class SpoolUnavailable(TransientError):
    """The spool could not take a file: the disk is full, or failed; the generation is kept."""


class PushUndelivered(TransientError):
    """Some push messages met a retryable error."""


class AddressNotPublic(ListenerError, OSError):
    """A host that resolves to no address the listener may connect to."""


class PermanentError(ListenerError):
    """A failure that ends the row as `failed`; the message is the reason a person reads."""

    def __init__(self, message: str, *, kind: FailureKind | None = None) -> None:
        super().__init__(message)
        # A short class of the reason for metrics (timeout, upstream, ...); None: the failing step's name.
        self.kind = kind


class FileTooLarge(PermanentError):
    """A file larger than the limit it was fetched under."""

"""One root, a small tree: callers catch broadly (GatewayError) or narrowly (AuthError).

Messages are single lines meant for an operator: they name what and where (file:line, config key,
byte offset) and never carry a secret.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is unusable; the message names the key (and file:line where known)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class ReaderError(GatewayError):
    """A reader link or format failed (bad URL, device gone, protocol violation)."""


class StorageError(GatewayError):
    """The local database is unusable (locked by another daemon, corrupt, read-only, full)."""


class DatabaseCorruptError(StorageError):
    """The database file is damaged (fails its integrity check, or is not a database at all)."""


class CloudError(GatewayError):
    """Any failure talking to the RUFUS Cloud."""

    def __init__(self, message: str, *, status: int | None = None, description: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.description = description


class AuthError(CloudError):
    """401/403: the key is missing, unknown or lacks the access type. Stop uploading, keep data, alert."""


class NotFoundError(CloudError):
    """404 for a device, session or passings range."""


class SessionClosedError(NotFoundError):
    """404 `Session not found or closed` when inserting passings."""


class BadRequestError(CloudError):
    """400: the server rejected the request's content; `description` holds its reason."""


class PayloadTooLargeError(CloudError):
    """413: too many passings in one request."""


class RetryableError(CloudError):
    """Timeouts, connection and TLS errors, 408/429/5xx, a 2xx that is not JSON: try again later."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        description: str | None = None,
        retry_after: float | None = None,
        clock_suspect: bool = False,
    ) -> None:
        super().__init__(message, status=status, description=description)
        self.retry_after = retry_after
        # A TLS "certificate not yet valid" usually means our clock is in the past (a Pi with no RTC).
        self.clock_suspect = clock_suspect

"""The errors a jobs client can cause or meet, each mapped once to a status by whisper_common.errors."""
from __future__ import annotations

import errno

from whisper_common.db import StorageFull
from whisper_common.errors import ApiError, InvalidParameter, NotFound


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job '{job_id[:80]}' not found", param="id")


class JobNotFinished(ApiError):
    """The result of a job that is queued, running, failed or canceled (409)."""

    status_code = 409
    code = "job_not_finished"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="id")


class IdempotencyConflict(ApiError):
    """The Idempotency-Key names a job submitted with a different request (409)."""

    status_code = 409
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used for a different request; use a new key", param="Idempotency-Key"
        )


class InsufficientStorage(ApiError):
    """DATA_DIR (or the database) is full: the job was not accepted and nothing of it is kept (507)."""

    status_code = 507
    error_type = "server_error"
    code = "insufficient_storage"

    def __init__(self, message: str = "the server has no space left to store this job; nothing was kept") -> None:
        super().__init__(message)


def storage_full(exc: BaseException) -> bool:
    """Whether `exc` says there is no room left: in DATA_DIR (ENOSPC, EDQUOT) or in the database (StorageFull)."""
    if isinstance(exc, StorageFull | InsufficientStorage):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class OutboundRefused(InvalidParameter):
    """`audio_url` or `webhook_url` is not an http(s) URL, cannot be resolved, or reaches an address the operator did
    not allow (loopback, private, link-local) (400)."""

    code = "url_refused"


class AudioUrlsDisabled(InvalidParameter):
    code = "audio_url_disabled"

    def __init__(self) -> None:
        super().__init__("audio_url", "audio_url is disabled on this server (ALLOW_AUDIO_URLS=false); upload the file")


class TransientJobError(Exception):
    """A failure worth another attempt (a download that timed out or met a 5xx)."""


class PermanentJobError(Exception):
    """A failure another attempt cannot fix; `code` names it on the job."""

    def __init__(self, message: str, code: str = "job_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

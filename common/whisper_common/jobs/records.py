"""A job as stored (`JobRow`, one row of table `jobs`) and as the API shows it (`JobView`, also the webhook's `data`).
The view never shows a URL's credentials or query string (`webhook.url` is redacted)."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from whisper_common.jobs.outbound import redact_url


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)
ALL_STATUSES = tuple(JobStatus)


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def new_delivery_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Progress(BaseModel):
    audio_seconds_done: float = Field(description="Seconds of audio transcribed so far.")
    audio_seconds: float | None = Field(description="Length of the audio; null until it is decoded.")


class JobErrorView(BaseModel):
    message: str
    code: str


class AttemptView(BaseModel):
    attempt: int
    at: str
    outcome: str = Field(description="`delivered`, `retrying`, `failed` (not retried) or `disabled` (410).")
    status_code: int | None = None
    error: str | None = None


class DeliveryView(BaseModel):
    id: str = Field(description="The `webhook-id`: the same on every retry of one delivery.")
    event: str
    status: str = Field(description="`pending`, `delivered`, `failed` or `disabled`.")
    attempts: list[AttemptView]


class WebhookView(BaseModel):
    url: str | None = Field(description="Scheme, host and path of the webhook URL (its credentials and query string "
                            "are never shown).")
    deliveries: list[DeliveryView]


class JobView(BaseModel):
    id: str
    object: str = "transcription.job"
    owner: str = Field(description="Who submitted it (a key's name, an edge user); empty for jobs from before owners.")
    status: JobStatus
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: Progress
    attempts: int = Field(description="Runs started so far (a retry after a crash or a transient failure adds one).")
    error: JobErrorView | None = None
    cancel_requested: bool = Field(False, description="A cancel was asked while it ran; it stops at its next segment.")
    metadata: dict[str, Any]
    webhook: WebhookView


class DisabledWebhookView(BaseModel):
    id: str = Field(description="Pass it to `DELETE /v1/webhooks/disabled/{id}` to deliver to this URL again.")
    object: str = "webhook.disabled_url"
    owner: str
    url: str = Field(description="Scheme, host and path of the URL that answered 410 Gone.")
    disabled_at: str


class DisabledWebhookList(BaseModel):
    object: str = "list"
    data: list[DisabledWebhookView]


class JobList(BaseModel):
    object: str = "list"
    data: list[JobView]
    has_more: bool
    last_id: str | None = Field(description="Pass it as `after` for the next page.")


class JobRow(BaseModel):
    """One row of table `jobs`; timestamps are Unix seconds, JSON columns are text."""

    id: str
    queue: str
    owner: str = ""
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    run_after: float
    attempts: int = 0
    max_attempts: int
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: int = 0
    options: str = "{}"
    metadata: str = "{}"
    webhook_url: str | None = None
    audio_url: str | None = None
    audio_file: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    audio_seconds: float | None = None
    audio_seconds_done: float = 0.0
    error: str | None = None
    result: str | None = None

    @property
    def options_dict(self) -> dict[str, Any]:
        return json.loads(self.options)

    def error_view(self) -> JobErrorView | None:
        return JobErrorView(**json.loads(self.error)) if self.error else None

    def view(self, deliveries: list[DeliveryView] | None = None) -> JobView:
        return JobView(
            id=self.id,
            owner=self.owner,
            status=self.status,
            created_at=iso(self.created_at) or "",
            started_at=iso(self.started_at),
            finished_at=iso(self.finished_at),
            progress=Progress(audio_seconds_done=round(self.audio_seconds_done, 3), audio_seconds=self.audio_seconds),
            attempts=self.attempts,
            error=self.error_view(),
            cancel_requested=bool(self.cancel_requested) and self.status is JobStatus.RUNNING,
            metadata=json.loads(self.metadata),
            webhook=WebhookView(url=redact_url(self.webhook_url), deliveries=deliveries or []),
        )


class DeliveryRow(BaseModel):
    """One row of table `webhook_deliveries`: a persisted outbox entry, its body fixed when the job finished."""

    id: str
    queue: str
    job_id: str
    url: str
    receiver: str | None = None
    """Scheme, host and port of `url`: the outbox sends to one receiver at a time."""
    event: str
    payload: str
    status: str
    created_at: float
    next_attempt_at: float
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None


def event_payload(job: JobRow, delivery_id: str, now: float) -> str:
    """The webhook body (Standard Webhooks shape): `{"type": "job.succeeded", "timestamp", "data": <the job>}`. It
    carries the job, never the transcript; deliveries are left out of `data` (they change as it is delivered)."""
    data = job.view().model_dump(mode="json")
    data.pop("webhook", None)
    data["webhook_delivery_id"] = delivery_id
    return json.dumps({"type": f"job.{job.status.value}", "timestamp": iso(now), "data": data}, separators=(",", ":"))

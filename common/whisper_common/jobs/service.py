"""The jobs service: what `/v1/jobs` does, below HTTP. A route parses the request, calls one method, formats what it
returns; errors are the domain's own (`JobNotFound`, `IdempotencyConflict`, `InsufficientStorage`, ...), turned into
responses at the edge.

    service = JobsService(context, engine, runner, quotas, usage)
    accepted = await service.submit(owner, submission)      # Accepted(job, replayed)
    view = await service.get(owner, job_id)                 # JobView, with its webhook deliveries
    result = await service.result(owner, job_id)            # JobResult(transcript, options asked at submit)
    ended = await service.cancel(owner, job_id)             # Canceled(job, deleted)
    page = await service.list(owner, status, limit, after)  # JobList
    removed = await service.erase_owner("team-a")           # DELETE /v1/owners/{owner}/data

Every call names the caller (`owners.Owner`): a user reaches only its own jobs, an admin everyone's; someone else's
job is a JobNotFound like one that does not exist. An Idempotency-Key names one request of one owner: the same key
with the same options, metadata, URLs and file (its SHA-256) gives the same job again; with anything else, a 409;
another owner's same key is another key. A submission is held to the owner's quotas (jobs at once, audio hours of the
day: 429) and counted in its usage.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from whisper_common.jobs.context import JobsContext
from whisper_common.jobs.contract import JobEngine, transcript_from_json
from whisper_common.jobs.errors import (
    AudioUrlsDisabled,
    IdempotencyConflict,
    InsufficientStorage,
    JobNotFinished,
    JobNotFound,
    storage_full,
)
from whisper_common.jobs.intake import check_free_space
from whisper_common.errors import NotFound
from whisper_common.jobs.records import (
    DisabledWebhookList,
    DisabledWebhookView,
    JobList,
    JobRow,
    JobStatus,
    JobView,
    iso,
    new_job_id,
)
from whisper_common.jobs.outbound import redact_url
from whisper_common.jobs.store import DuplicateKey, StorageFull, scoped_idempotency_key
from whisper_common.owners import Owner
from whisper_common.quotas import QuotaGuard
from whisper_common.transcript import Transcript
from whisper_common.usage.ledger import UsageLedger

JOBS_ROUTE = "/v1/jobs"


class LocalJobs(Protocol):
    """What the service tells this process's loops (the runner)."""

    def job_queued(self) -> None: ...

    def job_ended(self) -> None: ...

    def cancel_running(self, job_id: str) -> None: ...


@dataclass
class Submission:
    """A job request as the route parsed it."""

    options: BaseModel
    """The service's options model, validated."""
    metadata: dict[str, Any]
    audio_url: str | None = None
    webhook_url: str | None = None
    file: Path | None = None
    """The stored upload (under `JobFiles.incoming`); the service moves it to the job."""
    file_sha256: str = ""
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Accepted:
    job: JobView
    replayed: bool = False
    """The Idempotency-Key named a job submitted before with the same request: that job, not a new one."""


@dataclass(frozen=True)
class Canceled:
    job: JobView
    """As it is now: canceled (it was queued), still running with `cancel_requested` (it stops at its next segment),
    or as it was before its deletion."""
    deleted: bool
    """It had finished: removed with its audio and result."""


@dataclass(frozen=True)
class JobResult:
    transcript: Transcript
    options: dict[str, Any]
    """As asked at submit (`response_format`, `timestamp_granularities`: the result's defaults)."""


def request_hash(
    options: dict[str, Any], metadata: dict[str, Any], webhook_url: str | None, audio_url: str | None, file_sha256: str
) -> str:
    """What an Idempotency-Key stands for. Kept on the job (`request_hash`): the formula must not change between
    releases, or a retry across an upgrade would be refused."""
    text = json.dumps([options, metadata, webhook_url, audio_url, file_sha256], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class JobsService:
    def __init__(
        self, context: JobsContext, engine: JobEngine, local: LocalJobs, quotas: QuotaGuard | None = None,
        usage: UsageLedger | None = None,
    ) -> None:
        self.context = context
        self.store = context.store
        self.files = context.files
        self.engine = engine
        self.local = local
        self.quotas = quotas
        self.usage = usage

    @property
    def upload_dir(self) -> Path:
        """Where a route streams an upload before `submit` (the same file system as the jobs' files)."""
        return self.files.incoming

    async def submit(self, owner: Owner, submission: Submission) -> Accepted:
        """Check what needs the service (the engine's options, audio URLs allowed, outbound rules) and the owner's
        quotas, then store the job durably: its audio moved in and fsynced, its row committed, before it is
        accepted."""
        self.engine.check(submission.options)  # e.g. an English-only model asked for another language
        options = submission.options.model_dump(mode="json", exclude_none=True)
        audio_url, webhook_url = submission.audio_url, submission.webhook_url
        if audio_url:
            if not self.context.allow_audio_urls:
                raise AudioUrlsDisabled()
            await self.context.outbound.check("audio_url", audio_url)
        if webhook_url:
            await self.context.outbound.check("webhook_url", webhook_url)

        digest = request_hash(options, submission.metadata, webhook_url, audio_url, submission.file_sha256)
        key = submission.idempotency_key or None
        if key:
            existing = await asyncio.to_thread(self.store.by_idempotency_key, owner.name, key)
            if existing is not None:
                return _replay(existing, digest)
        if self.quotas is not None:
            self.quotas.check_audio(owner)
            if self.quotas.max_active_jobs(owner):
                self.quotas.check_jobs(owner, await asyncio.to_thread(self.store.count_active, owner.name))

        now = time.time()
        job = JobRow(
            id=new_job_id(), queue=self.store.queue, owner=owner.name, status=JobStatus.QUEUED, created_at=now,
            run_after=now, max_attempts=self.context.retry.job_attempts,
            options=json.dumps(options), metadata=json.dumps(submission.metadata), webhook_url=webhook_url,
            audio_url=audio_url, idempotency_key=scoped_idempotency_key(owner.name, key) if key else None,
            request_hash=digest,
        )
        try:
            if submission.file is not None:
                check_free_space(self.files.root, 1 << 20)
                job.audio_file = await asyncio.to_thread(self.files.adopt, job.id, submission.file)
            await asyncio.to_thread(self.store.insert, job)
        except DuplicateKey:  # the same key, submitted meanwhile by another request
            await asyncio.to_thread(self.files.remove, job.id)
            existing = await asyncio.to_thread(self.store.by_idempotency_key, owner.name, key or "")
            if existing is None:
                raise
            return _replay(existing, digest)
        except (StorageFull, InsufficientStorage, OSError) as exc:
            await asyncio.to_thread(self.files.remove, job.id)
            if not storage_full(exc):
                raise
            raise InsufficientStorage() from None
        self.local.job_queued()
        if self.usage is not None:
            self.usage.job(owner.name, JOBS_ROUTE, str(options.get("model") or ""))
        return Accepted(job.view())

    async def get(self, owner: Owner, job_id: str) -> JobView:
        job = await self._job(owner, job_id)
        deliveries = await asyncio.to_thread(self.store.deliveries, job_id)
        return job.view(deliveries)

    async def result(self, owner: Owner, job_id: str) -> JobResult:
        """The transcript of a succeeded job; JobNotFinished (409) for any other."""
        job = await self._job(owner, job_id)
        if job.status is not JobStatus.SUCCEEDED or job.result is None:
            raise _not_finished(job)
        transcript = await asyncio.to_thread(transcript_from_json, job.result)
        return JobResult(transcript, job.options_dict)

    async def cancel(self, owner: Owner, job_id: str) -> Canceled:
        """Cancel a queued job (at once) or a running one (its worker, here or elsewhere, stops at its next segment);
        delete a finished one with its audio and result."""
        job, deleted = await asyncio.to_thread(self.store.cancel_or_delete, job_id, owner, time.time())
        if job is None:
            raise JobNotFound(job_id)
        if deleted:
            await asyncio.to_thread(self.files.remove, job_id)
            if self.context.transcripts is not None:  # not found by search any more
                await self.context.transcripts.forget([job_id])
        elif job.status is JobStatus.RUNNING:
            self.local.cancel_running(job_id)  # a worker elsewhere learns it at its next lease renewal
        else:
            self.local.job_ended()  # its webhook delivery is due
        return Canceled(job.view(), deleted)

    async def list(self, owner: Owner, status: JobStatus | None, limit: int, after: str | None) -> JobList:
        """The owner's jobs (an admin's: every job), newest first; `after` is the `last_id` of the previous page."""
        rows, has_more = await asyncio.to_thread(self.store.list, owner, status, limit, after)
        return JobList(data=[row.view() for row in rows], has_more=has_more, last_id=rows[-1].id if rows else None)

    async def erase_owner(self, owner: str) -> int:
        """Every job of `owner`, with its audio, result and webhook deliveries; running ones are stopped here (a
        worker elsewhere finds its job gone at its next lease renewal and keeps nothing). Returns how many."""
        ids = await asyncio.to_thread(self.store.erase_owner, owner)
        for job_id in ids:
            self.local.cancel_running(job_id)
            await asyncio.to_thread(self.files.remove, job_id)
        return len(ids)

    async def disabled_webhooks(self, owner: Owner) -> DisabledWebhookList:
        rows = await asyncio.to_thread(self.store.disabled_urls, owner)
        return DisabledWebhookList(data=[
            DisabledWebhookView(id=row["id"], owner=row["owner"], url=redact_url(row["url"]) or "",
                                disabled_at=iso(row["disabled_at"]) or "")
            for row in rows
        ])

    async def enable_webhook(self, owner: Owner, disabled_id: str) -> None:
        """Deliver to a URL a 410 disabled again (deliveries already ended stay ended)."""
        if not await asyncio.to_thread(self.store.enable_url, disabled_id, owner):
            raise NotFound(f"no disabled webhook URL '{disabled_id[:80]}'", param="id")

    async def _job(self, owner: Owner, job_id: str) -> JobRow:
        job = await asyncio.to_thread(self.store.get, job_id, owner)
        if job is None:
            raise JobNotFound(job_id)
        return job


def _replay(existing: JobRow, digest: str) -> Accepted:
    if existing.request_hash != digest:
        raise IdempotencyConflict()
    return Accepted(existing.view(), replayed=True)


def _not_finished(job: JobRow) -> JobNotFinished:
    if job.status is JobStatus.FAILED:
        error = job.error_view()
        reason = error.message if error else "unknown"
        return JobNotFinished(f"job {job.id} failed: {reason}")
    if job.status is JobStatus.CANCELED:
        return JobNotFinished(f"job {job.id} was canceled; it has no result")
    return JobNotFinished(f"job {job.id} is {job.status.value}; its result is not ready (poll GET /v1/jobs/{job.id})")

"""What the worker, the outbox and the jobs service share, fixed at start-up: the store, the job files, the outbound
rules and client, the webhook signer, the metrics, the retry policy, the timings and the transcript library (if the
service keeps one). Nothing in it changes while the service runs; what does (the loops, the jobs running here) is the runner's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from whisper_common.jobs.files import JobFiles
from whisper_common.jobs.metrics import JobMetrics
from whisper_common.jobs.outbound import OutboundPolicy, outbound_client
from whisper_common.jobs.retry import RetryPolicy
from whisper_common.jobs.signer import Signer
from whisper_common.jobs.store import SqlStore
from whisper_common.settings import ServiceSettings

if TYPE_CHECKING:
    from whisper_common.transcripts.library import TranscriptLibrary


@dataclass(frozen=True)
class Timings:
    lease_seconds: float
    """A running job's lease (JOB_LEASE_SECONDS), renewed every third of it."""
    webhook_timeout_seconds: float
    """One whole webhook attempt (WEBHOOK_TIMEOUT_SECONDS)."""
    download_seconds: float
    """One whole `audio_url` download (AUDIO_URL_TIMEOUT_SECONDS)."""
    retention_seconds: float
    """How long a finished job is kept (JOB_RETENTION)."""

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Timings:
        return cls(
            settings.job_lease_seconds, settings.webhook_timeout_seconds, settings.audio_url_timeout_seconds,
            settings.job_retention,
        )

    @property
    def poll_seconds(self) -> float:
        """How long an idle worker or outbox waits before asking the store again (sooner when woken)."""
        return min(1.0, max(0.05, self.lease_seconds / 4))

    @property
    def heartbeat_seconds(self) -> float:
        return max(0.1, self.lease_seconds / 3)

    @property
    def delivery_lease_seconds(self) -> float:
        return self.webhook_timeout_seconds + 30

    @property
    def janitor_seconds(self) -> float:
        return max(0.2, min(30.0, self.lease_seconds / 2, self.retention_seconds / 4))


@dataclass(frozen=True)
class JobsContext:
    store: SqlStore
    files: JobFiles
    outbound: OutboundPolicy
    """Which hosts `audio_url` and `webhook_url` may reach."""
    client: httpx.AsyncClient
    """The outbound client (downloads and webhooks)."""
    signer: Signer
    metrics: JobMetrics
    retry: RetryPolicy
    timings: Timings
    max_download_bytes: int
    allow_audio_urls: bool
    webhook_concurrency: int = 8
    """Deliveries the outbox makes at once, one per receiver at most (WEBHOOK_CONCURRENCY)."""
    transcripts: TranscriptLibrary | None = None
    """Where a succeeded job's transcript is indexed for search, and forgotten when the job is deleted."""

    @classmethod
    def from_settings(
        cls, settings: ServiceSettings, store: SqlStore, metrics: JobMetrics, transcripts: TranscriptLibrary | None = None
    ) -> JobsContext:
        return cls(
            store=store,
            files=JobFiles(settings.data_dir),
            outbound=OutboundPolicy(settings.outbound_allowlist),
            client=outbound_client(),
            signer=Signer(settings.webhook_secret),
            metrics=metrics,
            retry=RetryPolicy.from_settings(settings),
            timings=Timings.from_settings(settings),
            max_download_bytes=settings.max_upload_bytes,
            allow_audio_urls=settings.allow_audio_urls,
            webhook_concurrency=settings.webhook_concurrency,
            transcripts=transcripts,
        )

"""A service's jobs, for its lifespan: the store, the files, the worker loops, the webhook outbox, the janitor
(expired leases, retention), the metrics and the activity counts the auto-start proxy reads.

    async with serve_jobs(app, settings, engine):     # in the service's lifespan, once its engine can run
        yield
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from whisper_common.jobs.engine import JobEngine
from whisper_common.jobs.files import JobFiles
from whisper_common.jobs.metrics import JobMetrics
from whisper_common.jobs.model import JobStatus
from whisper_common.jobs.outbound import OutboundPolicy, outbound_client
from whisper_common.jobs.outbox import Outbox
from whisper_common.jobs.signer import Signer
from whisper_common.jobs.store import SqlStore
from whisper_common.jobs.worker import Worker, new_owner
from whisper_common.settings import ServiceSettings

logger = logging.getLogger("whisper_common.jobs")

SQLITE_FILE = "jobs.sqlite3"
COUNTS_INTERVAL_SECONDS = 1.0
COUNTS_STALE_SECONDS = 30.0


def open_store(settings: ServiceSettings, queue: str) -> SqlStore:
    url = settings.jobs_database_url
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("JOBS_DATABASE_URL must be a postgresql:// URL")
        from whisper_common.jobs.postgres import PostgresStore

        return PostgresStore(url, queue)
    from whisper_common.jobs.sqlite import SqliteStore

    return SqliteStore(settings.data_dir / SQLITE_FILE, queue)


class JobsRuntime:
    def __init__(self, settings: ServiceSettings, engine: JobEngine, metrics: JobMetrics | None, store: SqlStore) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.files = JobFiles(settings.data_dir)
        self.policy = OutboundPolicy(settings.outbound_allowlist)
        self.signer = Signer(settings.webhook_secret)
        self.lease_seconds = settings.job_lease_seconds
        self.retry_seconds = settings.job_retry_seconds
        self.max_attempts = settings.job_max_attempts
        self.webhook_max_attempts = settings.webhook_max_attempts
        self.webhook_timeout = settings.webhook_timeout_seconds
        self.max_download_bytes = settings.max_upload_bytes
        self.download_seconds = settings.audio_url_timeout_seconds
        self.poll_seconds = min(1.0, max(0.05, self.lease_seconds / 4))
        self.client = outbound_client()
        self.metrics = metrics  # type: ignore[assignment]
        self.running: dict[str, threading.Event] = {}
        self.held_here = 0  # jobs this process's workers hold, from their claim until their end is written
        self.counts: dict[str, int] = {status.value: 0 for status in JobStatus}
        self.oldest_queued: float | None = None
        self.counts_at = 0.0
        self.deliveries_pending = 0
        self._accepted_at = 0.0
        self.work_available = asyncio.Event()
        self.outbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def wait_for_work(self) -> None:
        self.work_available.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.work_available.wait(), self.poll_seconds)

    def submitted(self) -> None:
        self.work_available.set()

    def accepted(self) -> None:
        """A job was just queued here: count it before the next refresh does."""
        self.counts[JobStatus.QUEUED.value] += 1
        self._accepted_at = time.time()
        self.submitted()

    def count(self, status: JobStatus) -> int:
        """The queue's count, as last read (at most a second old). Called on the event loop (GET /health/activity),
        so it never touches the database; a stale count raises, which the activity registry reports as busy."""
        self._raise_if_stale()
        return self.counts[status.value]

    def webhooks_pending(self) -> int:
        """Webhook deliveries still to be made, as last read (like `count`). The activity route reports them so
        that the proxy does not stop the service between a delivery's retries (at most WEBHOOK_MAX_ATTEMPTS, with
        doubling backoff), which would hold the webhook until the next wake."""
        self._raise_if_stale()
        return self.deliveries_pending

    def snapshot(self) -> tuple[dict[str, int], float | None]:
        """For the metrics collector (a scrape runs on the event loop too)."""
        self._raise_if_stale()
        return dict(self.counts), self.oldest_queued

    def _raise_if_stale(self) -> None:
        if time.time() - self.counts_at > COUNTS_STALE_SECONDS:
            raise RuntimeError("job counts are stale: the queue's database has not answered")

    async def refresh_counts(self) -> None:
        started = time.time()
        counts, oldest, pending = await asyncio.to_thread(self.store.queue_state)
        if self._accepted_at >= started:  # a job accepted while reading may be missing from what was read
            counts[JobStatus.QUEUED.value] = max(counts[JobStatus.QUEUED.value], self.counts[JobStatus.QUEUED.value])
        self.counts, self.oldest_queued, self.deliveries_pending = counts, oldest, pending
        self.counts_at = time.time()

    async def _count_loop(self) -> None:
        while True:
            await asyncio.sleep(COUNTS_INTERVAL_SECONDS)
            try:
                await self.refresh_counts()
            except Exception as exc:  # noqa: BLE001 - stale counts say busy; next round
                logger.warning("reading job counts failed", extra={"error": repr(exc)})

    def cancel_local(self, job_id: str) -> None:
        event = self.running.get(job_id)
        if event is not None:
            event.set()

    def start(self) -> None:
        workers = self.settings.jobs_workers
        for index in range(workers):
            worker = Worker(self, new_owner())
            self._tasks.append(asyncio.create_task(worker.run_forever(), name=f"job-worker-{index}"))
        if workers:
            self._tasks.append(asyncio.create_task(Outbox(self, new_owner()).run_forever(), name="job-outbox"))
        self._tasks.append(asyncio.create_task(self._janitor(), name="job-janitor"))
        self._tasks.append(asyncio.create_task(self._count_loop(), name="job-counts"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.aclose()
        self.store.close()

    async def _janitor(self) -> None:
        """Expired leases back to the queue (or failed), finished jobs past JOB_RETENTION removed with their files."""
        retention = self.settings.job_retention
        interval = max(0.2, min(30.0, self.lease_seconds / 2, retention / 4))
        while True:
            try:
                now = time.time()
                ended = await asyncio.to_thread(self.store.recover_expired, now, self.retry_seconds)
                if ended:
                    self.outbox_ready.set()
                for job in await asyncio.to_thread(self.store.expired, now - retention):
                    await asyncio.to_thread(self.files.remove, job.id)
                    await asyncio.to_thread(self.store.delete, job.id)
                    logger.info("job removed after JOB_RETENTION", extra={"job_id": job.id})
                await asyncio.to_thread(self.files.sweep_incoming, 86400)
                self.submitted()  # jobs put back in the queue may be runnable now
            except Exception as exc:  # noqa: BLE001 - next round
                logger.warning("job janitor failed", extra={"error": repr(exc)})
            await asyncio.sleep(interval)


@asynccontextmanager
async def serve_jobs(
    app: FastAPI, settings: ServiceSettings, engine: JobEngine, *, metrics_namespace: str
) -> AsyncIterator[JobsRuntime]:
    """Open the store, start the workers (JOBS_WORKERS), register metrics (on the service's registry, under its
    namespace) and activity; stop them all after."""
    store = await asyncio.to_thread(open_store, settings, metrics_namespace)
    runtime = JobsRuntime(settings, engine, None, store)
    runtime.metrics = JobMetrics(app.state.metrics.registry, metrics_namespace, runtime.snapshot)
    await runtime.refresh_counts()
    app.state.jobs = runtime
    app.state.activity.register("jobs_queued", lambda: runtime.count(JobStatus.QUEUED))
    # Running jobs: this process's own. With PostgreSQL the queue's other running jobs belong to other processes,
    # which neither an idle stop nor a pod's drain here would interrupt.
    app.state.activity.register("jobs_running", lambda: runtime.held_here)
    app.state.activity.register("webhooks_pending", runtime.webhooks_pending)
    runtime.start()
    logger.info(
        "jobs ready", extra={"store": store.backend, "workers": settings.jobs_workers, "data_dir": str(settings.data_dir)}
    )
    try:
        yield runtime
    finally:
        await runtime.stop()

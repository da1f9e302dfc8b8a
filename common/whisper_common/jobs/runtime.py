"""A service's jobs, for its lifespan: opens the store, builds the context, starts what runs here (the runner) and
puts the jobs service where the routes find it (`app.state.jobs`, held to the owners' quotas and counted in their
usage: `app.state.quotas`, `app.state.usage`); registers the metrics, the activity counts the auto-start proxy reads and
the jobs' eraser (`app.state.erasure`); stops and closes it all after.

    async with serve_jobs(app, settings, engine, metrics_namespace="my_service"):   # once its engine can run
        yield
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from whisper_common.jobs.context import JobsContext
from whisper_common.jobs.counts import QueueCounts
from whisper_common.jobs.contract import JobEngine
from whisper_common.jobs.errors import JobNotFound
from whisper_common.jobs.metrics import JobMetrics
from whisper_common.jobs.records import JobStatus
from whisper_common.jobs.runner import JobsRunner
from whisper_common.jobs.service import JobsService
from whisper_common.jobs.store import SqlStore
from whisper_common.owners import Owner
from whisper_common.settings import ServiceSettings
from whisper_common.transcripts.library import Source, TranscriptLibrary
from whisper_common.transcripts.model import SourceKind

logger = logging.getLogger("whisper_common.jobs")

SQLITE_FILE = "jobs.sqlite3"


def open_store(settings: ServiceSettings, queue: str) -> SqlStore:
    """The queue's store: PostgreSQL when JOBS_DATABASE_URL is set, else an SQLite file in DATA_DIR."""
    url = settings.jobs_database_url
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("JOBS_DATABASE_URL must be a postgresql:// URL")
        from whisper_common.jobs.postgres import PostgresStore

        return PostgresStore(url, queue)
    from whisper_common.jobs.sqlite import SqliteStore

    return SqliteStore(settings.data_dir / SQLITE_FILE, queue)


def transcript_source(service: JobsService, retention_seconds: float) -> Source:
    """The jobs as a source of the transcript library: kept JOB_RETENTION; a transcript deleted there is deleted as
    `DELETE /v1/jobs/{id}` deletes a finished job (with its audio and result)."""

    async def delete(owner: Owner, job_id: str) -> bool:
        try:
            return (await service.cancel(owner, job_id)).deleted
        except JobNotFound:
            return False

    return Source(SourceKind.JOB, retention_seconds, delete)


@asynccontextmanager
async def serve_jobs(
    app: FastAPI, settings: ServiceSettings, engine: JobEngine, *, metrics_namespace: str,
    transcripts: TranscriptLibrary | None = None,
) -> AsyncIterator[JobsService]:
    """Open the store, start the workers (JOBS_WORKERS), register metrics (on the service's registry, under its
    namespace) and activity; stop them all after. With `transcripts`, succeeded jobs are indexed there for search."""
    store = await asyncio.to_thread(open_store, settings, metrics_namespace)
    try:
        counts = QueueCounts(store)
        await counts.refresh()
        metrics = JobMetrics(app.state.metrics.registry, metrics_namespace, counts.snapshot)
        context = JobsContext.from_settings(settings, store, metrics, transcripts)
    except BaseException:
        store.close()
        raise
    runner = JobsRunner(context, engine, counts, workers=settings.jobs_workers)
    service = JobsService(context, engine, runner, app.state.quotas, app.state.usage)
    app.state.jobs = service
    app.state.erasure.register("jobs", service.erase_owner)
    if transcripts is not None:
        transcripts.register(transcript_source(service, settings.job_retention))
    app.state.activity.register("jobs_queued", lambda: counts.count(JobStatus.QUEUED))
    # Running jobs: this process's own. With PostgreSQL the queue's other running jobs belong to other processes,
    # which neither an idle stop nor a pod's drain here would interrupt.
    app.state.activity.register("jobs_running", lambda: runner.jobs_running)
    app.state.activity.register("webhooks_pending", counts.webhooks_pending)
    runner.start()
    logger.info(
        "jobs ready", extra={"store": store.backend, "workers": settings.jobs_workers, "data_dir": str(settings.data_dir)}
    )
    try:
        yield service
    finally:
        app.state.erasure.unregister("jobs")
        if transcripts is not None:
            transcripts.unregister(SourceKind.JOB)
        await runner.stop()
        await context.client.aclose()
        store.close()

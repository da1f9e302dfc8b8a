"""What runs in this process: JOBS_WORKERS worker loops, the webhook outbox, the janitor (expired leases back to the
queue, finished jobs past JOB_RETENTION removed with their files) and the per-second queue counts; and the jobs this
process's workers hold, which `/health/activity` reports as `jobs_running` (with PostgreSQL the queue's other running
jobs are other processes', which neither an idle stop nor a pod's drain here would interrupt).

    runner = JobsRunner(context, engine, counts, workers=settings.jobs_workers)
    runner.start()          # in the service's lifespan
    ...
    await runner.stop()     # a running job is released, not counted as an attempt
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from whisper_common.db.janitor import every
from whisper_common.jobs.context import JobsContext
from whisper_common.jobs.counts import COUNTS_INTERVAL_SECONDS, QueueCounts
from whisper_common.jobs.contract import JobEngine
from whisper_common.jobs.outbox import Outbox
from whisper_common.jobs.worker import Worker, new_holder

logger = logging.getLogger("whisper_common.jobs")

INCOMING_MAX_AGE_SECONDS = 86400


class Wakeups:
    """What wakes this process's idle loops before their next poll: a job queued here, or a webhook delivery due."""

    def __init__(self, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self._work = asyncio.Event()
        self._deliveries = asyncio.Event()

    def work_queued(self) -> None:
        self._work.set()

    def deliveries_due(self) -> None:
        self._deliveries.set()

    async def wait_for_work(self) -> None:
        await self._wait(self._work)

    async def wait_for_deliveries(self) -> None:
        await self._wait(self._deliveries)

    async def _wait(self, event: asyncio.Event) -> None:
        event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.poll_seconds)


class RunningHere:
    """The jobs this process's workers hold, from their claim until their end is written, and the cancel events of
    those running now (a DELETE sets one; the engine stops at its next segment)."""

    def __init__(self) -> None:
        self._held = 0
        self._cancels: dict[str, threading.Event] = {}

    @property
    def count(self) -> int:
        return self._held

    @contextmanager
    def holding(self) -> Iterator[None]:
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    @contextmanager
    def running(self, job_id: str, cancel: threading.Event) -> Iterator[None]:
        self._cancels[job_id] = cancel
        try:
            yield
        finally:
            self._cancels.pop(job_id, None)

    def cancel(self, job_id: str) -> None:
        event = self._cancels.get(job_id)
        if event is not None:
            event.set()


class JobsRunner:
    def __init__(self, context: JobsContext, engine: JobEngine, counts: QueueCounts, *, workers: int) -> None:
        self.context = context
        self.engine = engine
        self.counts = counts
        self.workers = workers
        self.wakeups = Wakeups(context.timings.poll_seconds)
        self.here = RunningHere()
        self._tasks: list[asyncio.Task[None]] = []

    # --- what the jobs service tells it ---

    def job_queued(self) -> None:
        self.counts.accepted()
        self.wakeups.work_queued()

    def job_ended(self) -> None:
        """A job ended outside a worker (canceled while queued): its webhook delivery may be due."""
        self.wakeups.deliveries_due()

    def cancel_running(self, job_id: str) -> None:
        self.here.cancel(job_id)

    @property
    def jobs_running(self) -> int:
        return self.here.count

    # --- the loops ---

    def start(self) -> None:
        for index in range(self.workers):
            worker = Worker(self.context, self.engine, new_holder(), self.wakeups, self.here)
            self._spawn(worker.run_forever(), f"job-worker-{index}")
        if self.workers:
            self._spawn(Outbox(self.context, new_holder(), self.wakeups).run_forever(), "job-outbox")
        janitor_seconds = self.context.timings.janitor_seconds
        self._spawn(every(janitor_seconds, self.clean_up, what="job janitor", logger=logger), "job-janitor")
        self._spawn(every(COUNTS_INTERVAL_SECONDS, self.counts.refresh, what="reading job counts", logger=logger),
                    "job-counts")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _spawn(self, loop: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(loop, name=name))

    async def clean_up(self) -> None:
        """One janitor round: expired leases back to the queue (or failed), finished jobs past JOB_RETENTION removed
        with their files, uploads a dead process left half-received removed."""
        store, files = self.context.store, self.context.files
        now = time.time()
        if await asyncio.to_thread(store.recover_expired, now, self.context.retry.backoff):
            self.wakeups.deliveries_due()
        for job in await asyncio.to_thread(store.expired, now - self.context.timings.retention_seconds):
            await asyncio.to_thread(files.remove, job.id)
            await asyncio.to_thread(store.delete, job.id)
            logger.info("job removed after JOB_RETENTION", extra={"job_id": job.id})
        await asyncio.to_thread(files.sweep_incoming, INCOMING_MAX_AGE_SECONDS)
        self.wakeups.work_queued()  # jobs put back in the queue may be runnable now

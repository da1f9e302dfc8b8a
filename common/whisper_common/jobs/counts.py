"""The queue's counts as last read: jobs by status, the oldest queued job, webhook deliveries still to be made. Read
from the store every second off the event loop (`refresh`), so `/health/activity` and a metrics scrape never touch
the database; a count not refreshed for COUNTS_STALE_SECONDS raises, which the activity registry reports as busy.

With PostgreSQL they describe the shared queue, whichever process is asked.
"""
from __future__ import annotations

import asyncio
import time

from whisper_common.jobs.records import JobStatus
from whisper_common.jobs.store import SqlStore

COUNTS_INTERVAL_SECONDS = 1.0
COUNTS_STALE_SECONDS = 30.0


class QueueCounts:
    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self._counts: dict[str, int] = {status.value: 0 for status in JobStatus}
        self._oldest_queued: float | None = None
        self._deliveries_pending = 0
        self._read_at = 0.0
        self._accepted_at = 0.0

    async def refresh(self) -> None:
        started = time.time()
        counts, oldest, pending = await asyncio.to_thread(self._store.queue_state)
        if self._accepted_at >= started:  # a job accepted while reading may be missing from what was read
            counts[JobStatus.QUEUED.value] = max(counts[JobStatus.QUEUED.value], self._counts[JobStatus.QUEUED.value])
        self._counts, self._oldest_queued, self._deliveries_pending = counts, oldest, pending
        self._read_at = time.time()

    def accepted(self) -> None:
        """A job was just queued here: count it before the next refresh does."""
        self._counts[JobStatus.QUEUED.value] += 1
        self._accepted_at = time.time()

    def count(self, status: JobStatus) -> int:
        self._raise_if_stale()
        return self._counts[status.value]

    def webhooks_pending(self) -> int:
        """Webhook deliveries still to be made. The activity route reports them so that the proxy does not stop the
        service between a delivery's retries (at most WEBHOOK_MAX_ATTEMPTS, with doubling backoff), which would hold
        the webhook until the next wake."""
        self._raise_if_stale()
        return self._deliveries_pending

    def snapshot(self) -> tuple[dict[str, int], float | None]:
        """For the metrics collector (a scrape runs on the event loop too)."""
        self._raise_if_stale()
        return dict(self._counts), self._oldest_queued

    def _raise_if_stale(self) -> None:
        if time.time() - self._read_at > COUNTS_STALE_SECONDS:
            raise RuntimeError("job counts are stale: the queue's database has not answered")

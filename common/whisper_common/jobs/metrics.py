"""The jobs' Prometheus series, on the service's registry and namespace (`whisper_faster_jobs{status="queued"}`).

Counts by status and the oldest queued job's age are the queue's counts as last read (`counts.QueueCounts`, every
second), so with PostgreSQL they describe the shared queue, whichever process is scraped.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger("whisper_common.jobs")

_RUN_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


Snapshot = Callable[[], tuple[dict[str, int], float | None]]
"""Counts by status and the oldest queued job's creation time (Unix seconds, None when none waits)."""


class _QueueCollector(Collector):
    def __init__(self, namespace: str, snapshot: Snapshot) -> None:
        self.namespace = namespace
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(f"{self.namespace}_jobs", "Jobs by status (the whole queue).", labels=["status"])
        age = GaugeMetricFamily(
            f"{self.namespace}_jobs_oldest_queued_age_seconds", "Age of the oldest queued job; 0 when none waits."
        )
        try:
            counts, oldest = self.snapshot()
            for status, count in counts.items():
                jobs.add_metric([status], count)
            age.add_metric([], max(0.0, time.time() - oldest) if oldest is not None else 0.0)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database is away
            logger.warning("job metrics unavailable", extra={"error": repr(exc)})
            return
        yield jobs
        yield age

    def describe(self) -> Iterator[Metric]:
        return iter(())


class JobMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        namespace: str,
        snapshot: Snapshot,
    ) -> None:
        self.run_seconds = Histogram(
            "job_run_seconds", "Time one run of a job took (download, decode, transcription).",
            namespace=namespace, registry=registry, buckets=_RUN_BUCKETS,
        )
        self.attempts = Counter(
            "job_attempts", "Job runs by outcome: succeeded, failed (permanent or out of attempts), retried, "
            "canceled, released (shutdown or full), lost (lease lost while it ran).",
            ["outcome"], namespace=namespace, registry=registry,
        )
        self.webhook_deliveries = Counter(
            "webhook_deliveries", "Webhook delivery attempts by outcome: delivered, retrying, failed, disabled.",
            ["outcome"], namespace=namespace, registry=registry,
        )
        registry.register(_QueueCollector(namespace, snapshot))

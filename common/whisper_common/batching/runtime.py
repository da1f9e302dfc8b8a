"""A service's batch scheduler for its lifetime: the scheduler (one thread per model replica), the threads that decode
windows, and the recording decoder the service's transcriptions use.

    async with serve_batching(app, settings, settings.scheduler, namespace="whisper_faster", in_flight=4) as batching:
        app.state.batching = batching           # batching.scheduler, batching.decoder
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from whisper_common.batching.ctranslate2_ops import OP_NAMES, op_name, run_whisper_ops
from whisper_common.batching.recording import RecordingDecoder
from whisper_common.batching.scheduler import BatchScheduler, SchedulerMetrics
from whisper_common.batching.settings import SchedulerSettings
from whisper_common.settings import ServiceSettings


@dataclass
class Batching:
    scheduler: BatchScheduler
    decoder: RecordingDecoder

    def close(self) -> None:
        self.scheduler.close()
        self.decoder.executor.shutdown(wait=False, cancel_futures=True)


def start_batching(settings: ServiceSettings, scheduler: SchedulerSettings, *, namespace: str | None, registry: object | None,
                   in_flight: int) -> Batching:
    metrics = SchedulerMetrics(namespace, registry) if namespace is not None and registry is not None else None  # type: ignore[arg-type]
    if metrics is not None:
        metrics.prime(tuple(OP_NAMES.values()))
    batch_scheduler = BatchScheduler(
        run_whisper_ops,
        batch_size=scheduler.batch_size,
        max_wait=scheduler.max_wait_ms / 1000,
        long_after_rows=scheduler.long_after_rows,
        long_batch_size=scheduler.long_batch_size,
        workers=settings.whisper.num_workers,
        name="batch",
        metrics=metrics,
        op_name=op_name,
    )
    # Window threads only wait on the scheduler; every admitted recording may have `in_flight` windows decoding.
    executor = ThreadPoolExecutor(max_workers=settings.max_concurrency * in_flight, thread_name_prefix="window")
    return Batching(batch_scheduler, RecordingDecoder(batch_scheduler, executor, in_flight=in_flight))


@asynccontextmanager
async def serve_batching(
    app: FastAPI, settings: ServiceSettings, scheduler: SchedulerSettings, *, namespace: str, in_flight: int
) -> AsyncIterator[Batching]:
    """`app.state.batching` for the app's lifespan; its metrics on the app's registry (`<namespace>_batch_*`)."""
    batching = start_batching(settings, scheduler, namespace=namespace, registry=app.state.metrics.registry,
                              in_flight=in_flight)
    app.state.batching = batching
    try:
        yield batching
    finally:
        batching.close()

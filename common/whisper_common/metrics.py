"""Prometheus metrics of a service, on its own registry, served at `/metrics`.

    metrics = ServiceMetrics(namespace="whisper_faster")      # create_service_app makes it: app.state.metrics
    metrics.record_inference("tiny.en", "transcribe", audio_seconds=11.0, seconds=0.8)   # after each transcription

Request counts by route template and status are recorded by `RequestContextMiddleware` (whisper_common.log); queue
depth by `InferenceGate`; loaded models by `ModelManager`; text kept out of transcripts by the hallucination guard
(`metrics.hallucination_suppressed` is the guard's report).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from whisper_common.speech_guard import Reason

logger = logging.getLogger("whisper_common.inference")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServiceMetrics:
    """Every metric a service exposes. One instance per app, on its own CollectorRegistry."""

    def __init__(self, namespace: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.inference_observers: list[Callable[[str, str, float], None]] = []
        """Called with (model, task, audio_seconds) after each transcription (per-owner usage)."""
        self.requests = Counter(
            "http_requests", "HTTP requests by route template, method and status.",
            ["route", "method", "status"], namespace=namespace, registry=self.registry,
        )
        self.request_seconds = Histogram(
            "http_request_duration_seconds", "HTTP request duration by route template.",
            ["route"], namespace=namespace, registry=self.registry, buckets=_LATENCY_BUCKETS,
        )
        self.audio_seconds = Counter(
            "audio_seconds_processed", "Seconds of audio transcribed or translated.",
            ["model", "task"], namespace=namespace, registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "inference_seconds", "Time spent in inference per request.",
            ["model", "task"], namespace=namespace, registry=self.registry, buckets=_LATENCY_BUCKETS,
        )
        self.queue_depth = Gauge(
            "inference_queue_depth", "Requests waiting for an inference slot.", namespace=namespace, registry=self.registry
        )
        self.inference_active = Gauge(
            "inference_active", "Inferences running now.", namespace=namespace, registry=self.registry
        )
        self.rejected = Counter(
            "inference_rejected", "Requests answered 503 because every slot and queue place was taken.",
            namespace=namespace, registry=self.registry,
        )
        self.models_loaded = Gauge(
            "models_loaded", "Models loaded in memory now.", namespace=namespace, registry=self.registry
        )
        self.model_loaded = Gauge(
            "model_loaded", "1 while the model is loaded, else 0.", ["model"], namespace=namespace, registry=self.registry
        )
        self.model_load_seconds = Histogram(
            "model_load_seconds", "Time to load a model.", ["model"], namespace=namespace, registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.hallucinations_suppressed = Counter(
            "hallucinations_suppressed", "Decoded text (or audio without speech) kept out of transcripts by the "
            "hallucination guard, by reason (whisper_common.speech_guard).",
            ["reason"], namespace=namespace, registry=self.registry,
        )
        for reason in Reason:  # shown at 0 before the first
            self.hallucinations_suppressed.labels(reason=reason.value)

    def record_inference(self, model: str, task: str, audio_seconds: float, seconds: float, **details: Any) -> None:
        """One transcription done (a synchronous request, a stream or a job): the audio and inference counters and the
        `inference done` log line (with `details`, e.g. the alignment and diarization methods)."""
        self.audio_seconds.labels(model=model, task=task).inc(audio_seconds)
        self.inference_seconds.labels(model=model, task=task).observe(seconds)
        for observe in self.inference_observers:
            observe(model, task, audio_seconds)
        logger.info(
            "inference done",
            extra={
                "model": model,
                "task": task,
                "audio_seconds": round(audio_seconds, 2),
                "inference_seconds": round(seconds, 3),
                **details,
            },
        )

    def hallucination_suppressed(self, reason: str) -> None:
        """One suppression by the hallucination guard (its `Report`)."""
        self.hallucinations_suppressed.labels(reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_router() -> APIRouter:
    """`GET /metrics` in the Prometheus text format (reads `request.app.state.metrics`)."""
    router = APIRouter()

    @router.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"description": "The Prometheus text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics(request: Request) -> Response:
        service_metrics: ServiceMetrics = request.app.state.metrics
        return Response(service_metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router

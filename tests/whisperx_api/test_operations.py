"""Health, readiness, metrics and the local Swagger UI."""
from __future__ import annotations

import httpx

from tests.support import fixture_path


def test_health_ready_docs(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/health/ready").json() == {"status": "ready"}
    docs = http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/transcribe", "/v1/audio/transcriptions", "/v1/models"} <= set(paths)


def test_metrics_count_audio_and_requests(http: httpx.Client) -> None:
    with fixture_path("jfk.flac").open("rb") as audio:
        assert http.post("/transcribe", files={"file": audio}).status_code == 200
    metrics = http.get("/metrics").text
    assert 'whisperx_audio_seconds_processed_total{model="tiny.en",task="transcribe"}' in metrics
    assert 'whisperx_http_requests_total{method="POST",route="/transcribe",status="200"}' in metrics
    assert 'whisperx_model_loaded{model="tiny.en"} 1.0' in metrics
    assert "x-request-id" in http.get("/health").headers

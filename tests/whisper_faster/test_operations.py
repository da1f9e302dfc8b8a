"""Operations surface: metrics, readiness, OpenAPI and Swagger UI from local assets."""
from __future__ import annotations

import re

import httpx

from tests.support import fixture_path


def test_metrics_after_a_transcription(http: httpx.Client) -> None:
    with fixture_path("jfk.flac").open("rb") as audio:
        assert http.post("/v1/audio/transcriptions", files={"file": audio}).status_code == 200
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(
        r'whisper_faster_http_requests_total\{method="POST",route="/v1/audio/transcriptions",status="200"\} [1-9]', text
    )
    audio_seconds = re.search(r'whisper_faster_audio_seconds_processed_total\{model="tiny.en",task="transcribe"\} ([\d.]+)', text)
    assert audio_seconds and float(audio_seconds.group(1)) >= 11.0
    assert re.search(r'whisper_faster_inference_seconds_count\{model="tiny.en",task="transcribe"\} [1-9]', text)
    assert "whisper_faster_inference_queue_depth 0.0" in text
    assert "whisper_faster_models_loaded 1.0" in text
    assert 'whisper_faster_model_loaded{model="tiny.en"} 1.0' in text


def test_ready(http: httpx.Client) -> None:
    assert http.get("/health/ready").json() == {"status": "ready"}


def test_openapi_documents_every_route_and_field(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    assert schema["info"]["title"] == "whisper-faster"
    paths = schema["paths"]
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models", "/v1/models/{model_id}",
                 "/health", "/health/ready", "/metrics"):
        assert path in paths, path
    form_ref = paths["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    form = schema["components"]["schemas"][form_ref.rsplit("/", 1)[1]]["properties"]
    for field in ("file", "model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]",
                  "stream", "beam_size", "vad_filter", "hotwords"):
        assert field in form, field


def test_swagger_ui_uses_local_assets(http: httpx.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert "<title>whisper-faster - Swagger UI</title>" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        response = http.get(asset)
        assert response.status_code == 200 and len(response.content) > 100, asset
    assert "SwaggerUIBundle" in http.get("/docs/assets/swagger-ui-bundle.js").text

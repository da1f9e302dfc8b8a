"""ServiceSettings from the environment, and the configuration reference made from it."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from whisper_common.settings import ServiceSettings, describe_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("API_KEYS", "PRELOAD_MODELS", "WHISPER__MODEL", "MAX_UPLOAD_MB"):
        monkeypatch.delenv(name, raising=False)
    settings = ServiceSettings()
    assert settings.whisper.model == "tiny.en" and settings.api_keys == []
    assert settings.max_upload_bytes == 500 * 2**20 and settings.models_to_preload == ["tiny.en"]
    assert (settings.uvicorn_host, settings.uvicorn_port) == ("0.0.0.0", 8000)


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPER__MODEL", "small")
    monkeypatch.setenv("WHISPER__INFERENCE_DEVICE", "cpu")
    monkeypatch.setenv("WHISPER__COMPUTE_TYPE", "int8")
    monkeypatch.setenv("WHISPER__CPU_THREADS", "3")
    monkeypatch.setenv("API_KEYS", " one, two ,,")
    monkeypatch.setenv("PRELOAD_MODELS", "")
    monkeypatch.setenv("MAX_QUEUE", "0")
    settings = ServiceSettings()
    assert settings.whisper.model == "small" and settings.whisper.cpu_threads == 3
    assert settings.api_keys == ["one", "two"] and settings.models_to_preload == []
    assert "one" not in repr(settings)


@pytest.mark.parametrize(("name", "value"), [("MAX_CONCURRENCY", "0"), ("WHISPER__INFERENCE_DEVICE", "tpu"), ("UVICORN_PORT", "70000"), ("MODEL_TTL_SECONDS", "-5")])
def test_bounds(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        ServiceSettings()


def test_every_field_is_documented() -> None:
    rows = describe_settings(ServiceSettings)
    names = {row["env"] for row in rows}
    assert {"WHISPER__MODEL", "WHISPER__INFERENCE_DEVICE", "WHISPER__COMPUTE_TYPE", "WHISPER__CPU_THREADS", "API_KEYS",
            "MAX_UPLOAD_MB", "MAX_AUDIO_SECONDS", "MODEL_TTL_SECONDS", "PRELOAD_MODELS", "MAX_CONCURRENCY", "MAX_QUEUE",
            "UVICORN_HOST", "UVICORN_PORT"} <= names
    assert all(row["description"] for row in rows)

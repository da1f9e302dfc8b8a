"""Models are preloaded with the server already up: /health/ready answers 503 with the download's progress until
they are loaded (what the auto-start proxy watches to keep waiting on a slow first start), then 200; a preload that
fails answers 503 `failed` with the reason (what the proxy passes on to waiting callers at once)."""
from __future__ import annotations

import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from whisper_common.app import create_service_app, serve_models
from whisper_common.errors import ModelNotFound
from whisper_common.settings import ServiceSettings

pytestmark = pytest.mark.timeout(30)


def test_ready_reports_cache_growth_while_preloading_then_ready(tmp_path: Path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    release = threading.Event()
    download = cache / "models--x--y" / "blobs" / "abc.incomplete"

    def loader(model_id: str) -> str:  # a download: the file grows until the test lets it finish
        download.parent.mkdir(parents=True)
        with download.open("wb") as partial:
            while not release.wait(0.02):
                partial.write(b"\0" * 4096)
                partial.flush()
        return model_id

    settings = ServiceSettings(preload_models="tiny.en")

    @asynccontextmanager
    async def lifespan(app):
        async with serve_models(app, settings, loader):
            yield

    app = create_service_app(settings, title="t", version="0", description="", metrics_namespace="preload_test",
                             lifespan=lifespan)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200  # alive and answering while the model loads
        seen = []
        for _ in range(3):
            answer = client.get("/health/ready")
            assert answer.status_code == 503
            body = answer.json()
            assert body["status"] == "not_ready" and body["error"]["code"] == "not_ready"
            seen.append(body["progress"]["cacheBytes"])
            time.sleep(0.1)
        assert seen[0] < seen[-1], f"progress did not advance: {seen}"
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.05)
        assert client.get("/health/ready").json() == {"status": "ready"}


def test_a_preload_that_fails_says_failed_with_the_reason():
    def loader(model_id: str) -> str:
        raise ModelNotFound(model_id)

    settings = ServiceSettings(preload_models="large-v3")

    @asynccontextmanager
    async def lifespan(app):
        async with serve_models(app, settings, loader):
            yield

    app = create_service_app(settings, title="t", version="0", description="", metrics_namespace="preload_fail_test",
                             lifespan=lifespan)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while (answer := client.get("/health/ready")).json()["status"] == "not_ready":
            assert time.monotonic() < deadline, "the failed preload was never reported"
            time.sleep(0.05)
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "failed" and body["error"]["code"] == "start_failed"
        assert body["error"]["message"].startswith("preload failed: ") and "large-v3" in body["error"]["message"]
        assert client.get("/health").status_code == 200  # alive: its log and /health still answer

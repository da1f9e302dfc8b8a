"""Model TTL on a server with MODEL_TTL_SECONDS=1 and nothing preloaded: idle models unload, busy ones never do."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.service_servers import Server, ServerFactory
from tests.support import fixture_path


@pytest.fixture(scope="module")
def short_ttl(start_server: ServerFactory) -> Iterator[Server]:
    with start_server("whisper_faster-ttl", MODEL_TTL_SECONDS="1", PRELOAD_MODELS="") as running:
        yield running


def _loaded(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("whisper_faster_models_loaded "):
            return float(line.split()[1])
    raise AssertionError("models_loaded metric missing")


def _wait_until_unloaded(client: httpx.Client, within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if _loaded(client) == 0:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"model still loaded after {within} s")


def test_idle_model_unloads_after_ttl_and_reloads_on_demand(short_ttl: Server) -> None:
    with short_ttl.client() as client:
        assert _loaded(client) == 0
        for _ in range(2):
            with fixture_path("hotwords.mp3").open("rb") as audio:
                assert client.post("/v1/audio/transcriptions", files={"file": audio}).status_code == 200
            assert client.get("/v1/models/tiny.en").json()["loaded"] in (True, False)
            _wait_until_unloaded(client, within=10)
        assert client.get("/v1/models/tiny.en").json()["loaded"] is False


def test_model_in_use_is_not_unloaded(short_ttl: Server) -> None:
    done = threading.Event()
    result: dict[str, httpx.Response] = {}

    def long_request() -> None:
        with short_ttl.client() as client, fixture_path("multilingual.mp3").open("rb") as audio:
            result["response"] = client.post("/v1/audio/transcriptions", files={"file": audio})
        done.set()

    worker = threading.Thread(target=long_request)
    worker.start()
    samples = []
    with short_ttl.client() as client:
        while not done.is_set():
            samples.append(_loaded(client))
            time.sleep(0.2)
        worker.join(timeout=120)
        assert result["response"].status_code == 200 and result["response"].json()["text"]
        # Loaded from the first sample after the load until the end, although the run outlasted the 1 s TTL.
        first_loaded = samples.index(1.0)
        assert all(sample == 1.0 for sample in samples[first_loaded:]), samples
        assert len(samples[first_loaded:]) * 0.2 > 1.0, samples
        _wait_until_unloaded(client, within=10)

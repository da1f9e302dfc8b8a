"""Concurrency on the default server: simultaneous requests, /health during a long transcription."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.service_servers import Server
from tests.support import fixture_path

TRANSCRIPTIONS = "/v1/audio/transcriptions"


def test_eight_simultaneous_requests_all_succeed(server: Server) -> None:
    barrier = threading.Barrier(8)

    def transcribe(_: int) -> httpx.Response:
        with server.client() as client, fixture_path("hotwords.mp3").open("rb") as audio:
            barrier.wait(timeout=30)
            return client.post(TRANSCRIPTIONS, files={"file": audio})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(transcribe, range(8)))
    assert [response.status_code for response in responses] == [200] * 8
    texts = {response.json()["text"] for response in responses}
    assert len(texts) == 1 and "folder" in texts.pop().lower()
    assert len({response.headers["x-request-id"] for response in responses}) == 8


def test_health_answers_during_a_long_transcription(server: Server) -> None:
    finished = threading.Event()
    result: dict[str, httpx.Response] = {}

    def long_request() -> None:
        with server.client() as client, fixture_path("multilingual.mp3").open("rb") as audio:
            result["response"] = client.post(TRANSCRIPTIONS, files={"file": audio}, data={"beam_size": "5"})
        finished.set()

    worker = threading.Thread(target=long_request)
    worker.start()
    health_checks = 0
    with server.client(timeout=5.0) as client:
        time.sleep(0.5)
        while not finished.is_set() and health_checks < 50:
            started = time.monotonic()
            assert client.get("/health").json() == {"status": "ok"}
            assert time.monotonic() - started < 2.0
            health_checks += 1
            time.sleep(0.1)
    worker.join(timeout=120)
    assert result["response"].status_code == 200
    assert health_checks >= 3, "the transcription ended before /health could be checked during it"


def test_request_id_is_taken_from_the_client(server: Server) -> None:
    with server.client() as client:
        response = client.get("/v1/models", headers={"X-Request-ID": "trace-abc.123"})
    assert response.headers["x-request-id"] == "trace-abc.123"

"""API keys, the streamed upload limit, the audio length limit and the queue limit, on one server started with them
set: API_KEYS, MAX_UPLOAD_MB=1, MAX_AUDIO_SECONDS=45, MAX_CONCURRENCY=1, MAX_QUEUE=1."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.service_servers import Server, ServerFactory
from tests.support import ARTIFACTS, fixture_path
from tests.whisper_faster.helpers import assert_openai_error

KEYS = ("first-secret-key-4f1c", "second-secret-key-9a2e")
TRANSCRIPTIONS = "/v1/audio/transcriptions"
LOG_NAME = "whisper_faster-auth-limits"


@pytest.fixture(scope="module")
def guarded(start_server: ServerFactory) -> Iterator[Server]:
    env = {
        "API_KEYS": ",".join(KEYS), "MAX_UPLOAD_MB": "1", "MAX_AUDIO_SECONDS": "45", "MAX_CONCURRENCY": "1", "MAX_QUEUE": "1",
    }
    with start_server(LOG_NAME, **env) as running:
        yield running


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _good(client: httpx.Client, key: str = KEYS[0]) -> httpx.Response:
    with fixture_path("hotwords.mp3").open("rb") as audio:
        return client.post(TRANSCRIPTIONS, files={"file": audio}, headers=_auth(key))


def test_health_is_open_everything_else_needs_a_key(guarded: Server) -> None:
    with guarded.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health/ready").status_code == 200
        for path in ("/v1/models", "/metrics", "/openapi.json", "/docs", "/v1/models/tiny.en"):
            response = client.get(path)
            assert_openai_error(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        assert_openai_error(client.get("/v1/models", headers=_auth("wrong")), 401)
        assert_openai_error(client.get("/v1/models", headers={"Authorization": KEYS[0]}), 401)
        with fixture_path("hotwords.mp3").open("rb") as audio:
            assert_openai_error(client.post(TRANSCRIPTIONS, files={"file": audio}), 401)
        for key in KEYS:
            assert client.get("/v1/models", headers=_auth(key)).status_code == 200
        assert _good(client, KEYS[1]).status_code == 200


def test_openai_client_with_and_without_key(guarded: Server) -> None:
    with fixture_path("hotwords.mp3").open("rb") as audio:
        result = openai.OpenAI(base_url=guarded.v1, api_key=KEYS[0], max_retries=0).audio.transcriptions.create(
            model="whisper-1", file=audio
        )
    assert "folder" in result.text.lower()
    with fixture_path("hotwords.mp3").open("rb") as audio, pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=guarded.v1, api_key="nope", max_retries=0).audio.transcriptions.create(
            model="whisper-1", file=audio
        )


def test_upload_over_limit_by_content_length(guarded: Server) -> None:
    with guarded.client() as client:
        with fixture_path("jfk.flac").open("rb") as audio:  # 1.1 MiB > 1 MiB
            response = client.post(TRANSCRIPTIONS, files={"file": audio}, headers=_auth(KEYS[0]))
        error = assert_openai_error(response, 413, "file")
        assert "1 MiB (MAX_UPLOAD_MB)" in error["message"]
        assert _good(client).status_code == 200


def test_upload_over_limit_while_streaming_chunked(guarded: Server) -> None:
    """No Content-Length: the limit is enforced on the bytes as they arrive, before the body ends."""
    boundary = "whisperboundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.wav\"\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield head
        for _ in range(400):  # up to 25 MB, far past the limit
            sent += 65536
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    with guarded.client() as client:
        try:
            response = client.post(
                TRANSCRIPTIONS,
                content=body(),
                headers={**_auth(KEYS[0]), "Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        except httpx.HTTPError as exc:  # the server may close the connection while we still send
            pytest.fail(f"no 413 answer: {exc!r}")
        error = assert_openai_error(response, 413, "file")
        assert "limit" in error["message"]
        assert _good(client).status_code == 200


def test_queue_full_answers_503_with_retry_after_not_a_hang(guarded: Server) -> None:
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        with guarded.client() as client, fixture_path("sample.wav").open("rb") as audio:
            response = client.post(TRANSCRIPTIONS, files={"file": audio}, headers=_auth(KEYS[0]))
        with lock:
            results.append(response)

    threads = [threading.Thread(target=send) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 5
    statuses = sorted(response.status_code for response in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1 and statuses.count(200) >= 2, statuses
    for response in results:
        if response.status_code == 503:
            assert_openai_error(response, 503)
            assert int(response.headers["retry-after"]) > 0
            assert response.elapsed.total_seconds() < 5  # rejected at once, not after waiting
    with guarded.client() as client:
        assert _good(client).status_code == 200


def test_audio_over_max_seconds(guarded: Server) -> None:
    with guarded.client() as client:
        with fixture_path("multilingual.mp3").open("rb") as audio:  # 60 s > 45 s
            response = client.post(TRANSCRIPTIONS, files={"file": audio}, headers=_auth(KEYS[0]))
        error = assert_openai_error(response, 400, "file")
        assert error["code"] == "audio_too_long" and "45" in error["message"]
        assert _good(client).status_code == 200


def test_disconnected_client_frees_its_slot(guarded: Server) -> None:
    log_path = ARTIFACTS / f"{LOG_NAME}.log"
    log_offset = log_path.stat().st_size
    with guarded.client() as client:
        with fixture_path("sample.wav").open("rb") as audio, pytest.raises(httpx.ReadTimeout):
            client.post(
                TRANSCRIPTIONS, files={"file": audio}, headers=_auth(KEYS[0]), timeout=httpx.Timeout(60, read=0.7)
            )
        deadline = time.monotonic() + 20
        active = None
        while time.monotonic() < deadline:
            metrics = client.get("/metrics", headers=_auth(KEYS[0])).text
            active = _gauge(metrics, "whisper_faster_inference_active")
            if active == 0:
                break
            time.sleep(0.2)
        assert active == 0
        assert _good(client).status_code == 200
    assert "client disconnected" in log_path.read_text()[log_offset:]


def test_keys_never_logged(guarded: Server) -> None:
    log = (ARTIFACTS / f"{LOG_NAME}.log").read_text()
    assert "request_id" in log
    for key in KEYS:
        assert key not in log


def _gauge(metrics: str, name: str) -> float | None:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_public_docs_opens_only_the_docs(start_server: ServerFactory) -> None:
    with start_server("whisper_faster-public-docs", API_KEYS=KEYS[0], PUBLIC_DOCS="true", PRELOAD_MODELS="") as server:
        with server.client() as client:
            assert "Swagger UI" in client.get("/docs").text
            assert client.get("/docs/assets/swagger-ui.css").status_code == 200
            assert client.get("/openapi.json").json()["info"]["title"] == "whisper-faster"
            assert_openai_error(client.get("/v1/models"), 401)
            assert_openai_error(client.get("/metrics"), 401)

"""API keys, MAX_AUDIO_SECONDS, MAX_CONCURRENCY/MAX_QUEUE and the model TTL on one server (PRELOAD_MODELS empty, so
the model loads on first use)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.service_servers import ServerFactory
from tests.support import ARTIFACTS, fixture_path
from tests.whisper_faster.helpers import assert_openai_error

KEY = "wx-test-key-1"


def test_keys_audio_limit_and_ttl(start_server: ServerFactory) -> None:
    env = {"API_KEYS": f"{KEY},other", "MAX_AUDIO_SECONDS": "5", "PRELOAD_MODELS": "", "MODEL_TTL_SECONDS": "2", "HF_HUB_OFFLINE": "1",
           "MAX_CONCURRENCY": "1", "MAX_QUEUE": "0"}
    with start_server("whisperx-auth", **env) as server, server.client() as http:
        assert http.get("/health").status_code == 200
        with fixture_path("hotwords.mp3").open("rb") as audio:
            assert_openai_error(http.post("/transcribe", files={"file": audio}), 401)
        assert_openai_error(http.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        authorized = {"Authorization": f"Bearer {KEY}"}
        with fixture_path("jfk.flac").open("rb") as audio:
            error = assert_openai_error(http.post("/transcribe", files={"file": audio}, headers=authorized), 400, "file")
        assert error["code"] == "audio_too_long"
        with fixture_path("hotwords.mp3").open("rb") as audio:
            response = http.post("/transcribe", files={"file": audio}, data={"diarize": "true"}, headers=authorized)
        assert response.status_code == 200, response.text
        assert "folder" in " ".join(s["text"] for s in response.json()["segments"]).lower()
        assert 'whisperx_model_loaded{model="tiny.en"} 1.0' in http.get("/metrics", headers=authorized).text
        assert_one_slot(http, authorized)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if 'whisperx_model_loaded{model="tiny.en"} 0.0' in http.get("/metrics", headers=authorized).text:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("tiny.en was not unloaded after MODEL_TTL_SECONDS idle")
        with fixture_path("hotwords.mp3").open("rb") as audio:
            assert http.post("/transcribe", files={"file": audio}, headers=authorized).status_code == 200
        assert KEY not in (ARTIFACTS / "whisperx-auth.log").read_text()


def assert_one_slot(http: httpx.Client, headers: dict[str, str]) -> None:
    """MAX_CONCURRENCY=1, MAX_QUEUE=0: of two simultaneous requests one runs and the other gets 503 + Retry-After."""
    payload = fixture_path("hotwords.mp3").read_bytes()  # under the 5 s MAX_AUDIO_SECONDS

    def post(_: int) -> httpx.Response:
        return http.post("/transcribe", files={"file": ("hotwords.mp3", payload)}, data={"diarize": "true"}, headers=headers)

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(post, range(2)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 503], [response.text[:200] for response in responses]
    busy = next(response for response in responses if response.status_code == 503)
    assert busy.headers["retry-after"] and assert_openai_error(busy, 503)["code"] == "server_busy"

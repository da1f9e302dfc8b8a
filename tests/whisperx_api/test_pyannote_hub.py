"""The hub answers 401 for the pyannote pipeline: the error tells the operator what to do and names the fallback.

A real local HTTP server stands in for the Hugging Face hub (HF_ENDPOINT); nothing is mocked."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.service_servers import ServerFactory
from tests.support import ARTIFACTS, fixture_path, free_port
from tests.whisper_faster.helpers import assert_openai_error


class _Refusing(BaseHTTPRequestHandler):
    status = 401

    def _refuse(self) -> None:
        body = b'{"error": "Access to this repository is restricted"}'
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _refuse
    do_HEAD = _refuse

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def refusing_hub() -> Iterator[type[_Refusing]]:
    port = free_port()
    handler = type("RefusingHub", (_Refusing,), {"url": f"http://127.0.0.1:{port}"})
    hub = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    yield handler
    hub.shutdown()
    hub.server_close()


def test_hub_401_403_name_token_conditions_and_fallback(
    start_server: ServerFactory, refusing_hub: type[_Refusing], tmp_path: Path
) -> None:
    env = {
        "HF_TOKEN": "hf_not_a_real_token",
        "HF_ENDPOINT": refusing_hub.url,  # type: ignore[attr-defined]
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "PRELOAD_MODELS": "",
        "DIARIZATION__RETRY_SECONDS": "0",
    }
    cases = [(401, "/transcribe", {"diarize": "true"}), (403, "/v1/audio/transcriptions", {"response_format": "diarized_json"})]
    with start_server("whisperx-hub401", **env) as server, server.client() as http:
        for status, route, data in cases:
            refusing_hub.status = status
            with fixture_path("sample.wav").open("rb") as audio:
                response = http.post(route, files={"file": audio}, data=data)
            error = assert_openai_error(response, 503, "diarize")
            message = error["message"]
            assert error["code"] == "diarization_unavailable"
            assert f"HTTP {status}" in message and "HF_TOKEN" in message and "accepted the pyannote model conditions" in message
            assert "embedded diarizer" in message and "DIARIZATION__BACKEND=embedded" in message
            assert "hf_not_a_real_token" not in response.text
        with fixture_path("jfk.flac").open("rb") as audio:
            assert http.post("/transcribe", files={"file": audio}).status_code == 200
        assert "hf_not_a_real_token" not in (ARTIFACTS / "whisperx-hub401.log").read_text()

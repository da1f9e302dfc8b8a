"""Translations: OpenAI's route and fields. The only model that exists offline is the English-only tiny.en, so the
route must refuse clearly (400 naming the model) rather than pretend to translate."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.service_servers import Server
from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_openai_error


def test_english_only_model_cannot_translate(http: httpx.Client) -> None:
    with fixture_path("multilingual.mp3").open("rb") as audio:
        response = http.post("/v1/audio/translations", files={"file": audio}, data={"model": "tiny.en"})
    error = assert_openai_error(response, 400, "model")
    assert "English-only" in error["message"] and "tiny.en" in error["message"]


def test_openai_client_translation_error(server: Server) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
    with fixture_path("jfk.flac").open("rb") as audio, pytest.raises(openai.BadRequestError) as raised:
        client.audio.translations.create(model="whisper-1", file=audio)
    assert "English-only" in str(raised.value)


def test_translation_validates_like_transcription(http: httpx.Client) -> None:
    with fixture_path("jfk.flac").open("rb") as audio:
        assert_openai_error(
            http.post("/v1/audio/translations", files={"file": audio}, data={"response_format": "xml"}), 400, "response_format"
        )
    assert_openai_error(http.post("/v1/audio/translations", data={"model": "tiny.en"}), 400, "file")
    with fixture_path("jfk.flac").open("rb") as audio:
        assert_openai_error(
            http.post("/v1/audio/translations", files={"file": audio}, data={"model": "no-such-model"}), 404, "model"
        )

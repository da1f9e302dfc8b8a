"""Translation, language detection and non-English transcription, on a real multilingual model (Whisper base, see
tests/multilingual_model.py) and real German speech: the first 10 s of the German half of multilingual.mp3 (30 s in).
The English-only tiny.en's 400s are checked beside them."""
from __future__ import annotations

import io
import wave

import httpx
import numpy as np
import openai
import pytest

from tests.service_servers import Server
from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_openai_error
from whisper_common.uploads import SAMPLE_RATE, decode_audio

GERMAN_WORDS = ("software", "dokumentationsdateien", "genehmigung")
# openai 3.x marks audio.translations as deprecated; the route is what OpenAI's API still serves and we test it.
pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def german_wav() -> bytes:
    samples = decode_audio(str(fixture_path("multilingual.mp3"))).samples[30 * SAMPLE_RATE : 40 * SAMPLE_RATE]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def _openai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", timeout=server.client_timeout, max_retries=0)


def _german(text: str) -> bool:
    lowered = text.lower()
    return sum(word in lowered for word in GERMAN_WORDS) >= 2


def test_translation_to_english_with_the_openai_client(service: Server, base_model: str, german_wav: bytes) -> None:
    translation = _openai(service).audio.translations.create(
        model=base_model, file=("german.wav", german_wav, "audio/wav")
    )
    text = translation.text.lower()
    assert "software" in text and "documentation" in text, text
    assert not _german(text), text


def test_language_detected_in_verbose_json(service: Server, base_model: str, german_wav: bytes) -> None:
    transcript = _openai(service).audio.transcriptions.create(
        model=base_model, file=("german.wav", german_wav, "audio/wav"), response_format="verbose_json"
    )
    assert transcript.language == "german", transcript.language
    assert _german(transcript.text), transcript.text


def test_explicit_language_de(faster: Server, whisperx: Server, base_model: str, german_wav: bytes) -> None:
    text = _openai(faster).audio.transcriptions.create(
        model=base_model, file=("german.wav", german_wav, "audio/wav"), language="de", response_format="text"
    )
    assert _german(str(text)), text
    with whisperx.client() as client:
        response = client.post(
            "/transcribe", files={"file": ("german.wav", german_wav, "audio/wav")}, data={"model": base_model, "language": "de"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == "de"
    assert _german(" ".join(segment["text"] for segment in body["segments"])), body


def test_english_only_model_says_what_it_cannot_do(faster: Server, whisperx: Server, german_wav: bytes) -> None:
    file = ("german.wav", german_wav, "audio/wav")
    for server in (faster, whisperx):
        with pytest.raises(openai.BadRequestError) as raised:
            _openai(server).audio.translations.create(model="tiny.en", file=file)
        assert raised.value.code == "unsupported_task" and "English-only" in raised.value.message
    for server, route in ((faster, "/v1/audio/transcriptions"), (whisperx, "/v1/audio/transcriptions"), (whisperx, "/transcribe")):
        response = httpx.post(
            f"{server.base_url}{route}", files={"file": file}, data={"model": "tiny.en", "language": "de"}, timeout=60
        )
        error = assert_openai_error(response, 400, "language")
        assert "English-only" in error["message"], (route, error)

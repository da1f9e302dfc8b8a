"""Transcriptions with the official `openai` client and with httpx: accuracy and every response format."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.service_servers import JFK_REFERENCE, Server
from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_monotonic_within, assert_openai_error, cue_times, word_error_rate

TRANSCRIPTIONS = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def openai_client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def jfk_verbose(server: Server) -> dict:
    with server.client() as client, fixture_path("jfk.flac").open("rb") as audio:
        response = client.post(
            TRANSCRIPTIONS,
            files={"file": ("jfk.flac", audio, "audio/flac")},
            data={"response_format": "verbose_json", "timestamp_granularities[]": ["segment", "word"]},
        )
    assert response.status_code == 200, response.text
    return response.json()


def test_openai_client_json_meets_wer(openai_client: openai.OpenAI) -> None:
    with fixture_path("jfk.flac").open("rb") as audio:
        result = openai_client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert word_error_rate(JFK_REFERENCE, result.text) <= 0.10, result.text
    assert result.usage is not None and result.usage.type == "duration"
    assert result.usage.seconds == 11


def test_openai_client_verbose_json_with_words(openai_client: openai.OpenAI) -> None:
    with fixture_path("jfk.flac").open("rb") as audio:
        result = openai_client.audio.transcriptions.create(
            model="tiny.en", file=audio, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert result.language == "english"
    assert result.duration == pytest.approx(11.0, abs=0.01)
    assert result.segments and result.segments[0].id == 0
    assert result.words and [word.word for word in result.words][:3] == ["And", "so,", "my"]
    assert word_error_rate(JFK_REFERENCE, result.text) <= 0.10


def test_openai_client_text_srt_vtt(openai_client: openai.OpenAI) -> None:
    for response_format in ("text", "srt", "vtt"):
        with fixture_path("hotwords.mp3").open("rb") as audio:
            result = openai_client.audio.transcriptions.create(
                model="Systran/faster-whisper-tiny.en", file=audio, response_format=response_format
            )
        assert isinstance(result, str) and "folder" in result.lower(), (response_format, result)


def test_httpx_json(http: httpx.Client) -> None:
    with fixture_path("jfk.flac").open("rb") as audio:
        response = http.post(TRANSCRIPTIONS, files={"file": audio}, data={"model": "tiny.en"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"text", "usage"}
    assert body["usage"] == {"type": "duration", "seconds": 11}
    assert word_error_rate(JFK_REFERENCE, body["text"]) <= 0.10
    assert response.headers["x-request-id"]


def test_verbose_json_fields_and_types(jfk_verbose: dict) -> None:
    body = jfk_verbose
    assert set(body) == {"task", "language", "duration", "text", "segments", "words"}
    assert body["task"] == "transcribe" and body["language"] == "english"
    assert body["duration"] == pytest.approx(11.0, abs=0.01)
    assert word_error_rate(JFK_REFERENCE, body["text"]) <= 0.10
    expected_types = {
        "id": int, "seek": int, "start": float, "end": float, "text": str, "tokens": list, "temperature": float,
        "avg_logprob": float, "compression_ratio": float, "no_speech_prob": float,
    }
    assert [segment["id"] for segment in body["segments"]] == list(range(len(body["segments"])))
    for segment in body["segments"]:
        assert set(segment) == set(expected_types)
        for key, kind in expected_types.items():
            assert isinstance(segment[key], kind) or (kind is float and isinstance(segment[key], int)), (key, segment)
        assert all(isinstance(token, int) for token in segment["tokens"])
        assert 0 <= segment["start"] <= segment["end"] <= body["duration"]
        assert 0 <= segment["no_speech_prob"] <= 1 and segment["avg_logprob"] <= 0
    assert "".join(segment["text"] for segment in body["segments"]).strip() == body["text"]
    for word in body["words"]:
        assert set(word) == {"word", "start", "end"}
        assert word["word"] == word["word"].strip() and word["word"]
        assert 0 <= word["start"] <= word["end"] <= body["duration"] + 0.01
    starts = [word["start"] for word in body["words"]]
    assert starts == sorted(starts)
    assert word_error_rate(JFK_REFERENCE, " ".join(word["word"] for word in body["words"])) <= 0.10


def test_verbose_json_without_granularities_has_no_words(http: httpx.Client) -> None:
    with fixture_path("hotwords.mp3").open("rb") as audio:
        body = http.post(TRANSCRIPTIONS, files={"file": audio}, data={"response_format": "verbose_json"}).json()
    assert "segments" in body and "words" not in body


def test_word_granularity_alone_returns_words_without_segments(http: httpx.Client) -> None:
    with fixture_path("hotwords.mp3").open("rb") as audio:
        response = http.post(
            TRANSCRIPTIONS,
            files={"file": audio},
            data={"response_format": "verbose_json", "timestamp_granularities[]": "word"},
        )
    body = response.json()
    assert "segments" not in body
    assert body["words"] and {"word", "start", "end"} == set(body["words"][0])


def test_word_granularity_needs_verbose_json(http: httpx.Client) -> None:
    with fixture_path("hotwords.mp3").open("rb") as audio:
        response = http.post(
            TRANSCRIPTIONS, files={"file": audio}, data={"response_format": "json", "timestamp_granularities[]": "word"}
        )
    assert_openai_error(response, 400, "timestamp_granularities")


@pytest.mark.parametrize(("response_format", "marker", "media_type"), [("srt", ",", "application/x-subrip"), ("vtt", ".", "text/vtt")])
def test_subtitles_are_valid_and_timed_within_duration(
    http: httpx.Client, response_format: str, marker: str, media_type: str
) -> None:
    with fixture_path("jfk.flac").open("rb") as audio:
        response = http.post(TRANSCRIPTIONS, files={"file": audio}, data={"response_format": response_format})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    text = response.text
    times = cue_times(text, marker)
    assert_monotonic_within(times, 11.0)
    if response_format == "vtt":
        assert text.startswith("WEBVTT\n\n")
    else:
        numbers = [int(block.split("\n", 1)[0]) for block in text.strip().split("\n\n")]
        assert numbers == list(range(1, len(numbers) + 1))
    spoken = " ".join(line for line in text.splitlines() if line and "-->" not in line and not line.isdigit() and line != "WEBVTT")
    assert word_error_rate(JFK_REFERENCE, spoken) <= 0.10


def test_text_format_is_plain_text(http: httpx.Client) -> None:
    with fixture_path("jfk.flac").open("rb") as audio:
        response = http.post(TRANSCRIPTIONS, files={"file": audio}, data={"response_format": "text"})
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.endswith("\n") and not response.text.startswith("{")
    assert word_error_rate(JFK_REFERENCE, response.text) <= 0.10


def test_extensions_hotwords_beam_size_vad(http: httpx.Client) -> None:
    with fixture_path("hotwords.mp3").open("rb") as audio:
        response = http.post(
            TRANSCRIPTIONS,
            files={"file": audio},
            data={"hotwords": "ComfyUI", "beam_size": "2", "vad_filter": "true", "response_format": "verbose_json"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "comfyui" in body["text"].lower(), body["text"]
    assert body["duration"] == pytest.approx(4.0, abs=0.1)


def test_stereo_wav_and_language_and_prompt(http: httpx.Client) -> None:
    with fixture_path("stereo_diarization.wav").open("rb") as audio:
        response = http.post(
            TRANSCRIPTIONS, files={"file": audio}, data={"language": "en", "prompt": "The wizard.", "temperature": "0"}
        )
    assert response.status_code == 200, response.text
    text = response.json()["text"].lower()
    assert "wizard" in text or "horizon" in text, text


"""The OpenAI routes: the official `openai` client, diarized_json, SSE `transcript.text.segment` events, /v1/models."""
from __future__ import annotations

import json

import httpx
import openai

from tests.service_servers import JFK_REFERENCE, Server
from tests.support import fixture_path
from tests.whisper_faster.helpers import word_error_rate


def test_openai_client_json_text_and_verbose(server: Server) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", timeout=300)
    with fixture_path("jfk.flac").open("rb") as audio:
        transcript = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert word_error_rate(JFK_REFERENCE, transcript.text) <= 0.10
    with fixture_path("jfk.flac").open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="tiny.en", file=audio, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert verbose.language == "english" and verbose.words and verbose.segments
    assert all(word.start < word.end for word in verbose.words)


def test_diarized_json(http: httpx.Client) -> None:
    with fixture_path("sample.wav").open("rb") as audio:
        response = http.post("/v1/audio/transcriptions", files={"file": audio}, data={"response_format": "diarized_json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"task", "duration", "text", "segments", "usage"}
    assert body["task"] == "transcribe" and abs(body["duration"] - 30.0) < 0.1
    assert body["usage"] == {"type": "duration", "seconds": 30}
    # OpenAI's labels (A, B, ... by first appearance), not WhisperX's SPEAKER_00 (those stay on /transcribe).
    assert body["segments"][0]["speaker"] == "A"
    assert {segment["speaker"] for segment in body["segments"]} == {"A", "B"}
    for index, segment in enumerate(body["segments"]):
        assert set(segment) == {"id", "start", "end", "speaker", "text", "type"}
        assert segment["id"] == f"seg_{index}" and segment["type"] == "transcript.text.segment"
        assert segment["start"] < segment["end"]
    assert body["text"].startswith(body["segments"][0]["text"])


def test_stream_diarized_segments(http: httpx.Client) -> None:
    with fixture_path("sample.wav").open("rb") as audio:
        with http.stream(
            "POST",
            "/v1/audio/transcriptions",
            files={"file": audio},
            data={"response_format": "diarized_json", "stream": "true"},
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    segments = [event for event in events if event["type"] == "transcript.text.segment"]
    assert segments and segments[0]["speaker"] == "A" and {event["speaker"] for event in segments} <= {"A", "B"}
    assert all(isinstance(event["id"], str) for event in segments)
    assert events[-1]["type"] == "transcript.text.done"
    assert events[-1]["text"] == " ".join(event["text"] for event in segments)


def test_stream_plain_deltas(http: httpx.Client) -> None:
    with fixture_path("jfk.flac").open("rb") as audio:
        with http.stream("POST", "/v1/audio/transcriptions", files={"file": audio}, data={"stream": "true"}) as response:
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [event["type"] for event in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert word_error_rate(JFK_REFERENCE, events[-1]["text"]) <= 0.10


def test_models_list(http: httpx.Client) -> None:
    body = http.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {model["id"] for model in body["data"]}
    assert {"tiny.en", "whisper-1"} <= ids
    tiny = next(model for model in body["data"] if model["id"] == "tiny.en")
    assert tiny["loaded"] and tiny["default"] and tiny["object"] == "model"
    assert http.get("/v1/models/tiny.en").json()["id"] == "tiny.en"
    assert http.get("/v1/models/large-v3").status_code == 404


def test_prompt_guides_vocabulary(http: httpx.Client) -> None:
    def text(**data: str) -> str:
        with fixture_path("hotwords.mp3").open("rb") as audio:
            response = http.post("/v1/audio/transcriptions", files={"file": audio}, data=data)
        assert response.status_code == 200, response.text
        return response.json()["text"]

    assert "ComfyUI" not in text()
    assert "ComfyUI" in text(prompt="ComfyUI")
    assert "ComfyUI" not in text()  # the prompt does not stick to the shared model

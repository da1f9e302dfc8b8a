"""Every bad input is a 4xx with OpenAI's error JSON, and the next good request is served normally."""
from __future__ import annotations

import httpx
import pytest

from tests.audio_cases import Case, bad_audio_cases, fixture_bytes, materialise, truncated_fixture
from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_openai_error

TRANSCRIPTIONS = "/v1/audio/transcriptions"


JFK = fixture_bytes("jfk.flac")

CASES: dict[str, Case] = {
    **bad_audio_cases(),
    "truncated flac": ({"file": ("cut.flac", truncated_fixture("jfk.flac", 0.3), "audio/flac")}, {}, 400, "file"),
    "missing file field": ({}, {"model": "tiny.en"}, 400, "file"),
    "unknown response_format": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"response_format": "docx"}, 400, "response_format"),
    "temperature above 1": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"temperature": "1.5"}, 400, "temperature"),
    "temperature negative": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"temperature": "-0.1"}, 400, "temperature"),
    "temperature not a number": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"temperature": "warm"}, 400, "temperature"),
    "unknown model": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"model": "gigantic-v9"}, 404, "model"),
    "path as model": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"model": "../../etc/passwd"}, 400, "model"),
    "absolute path as model": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"model": "/etc"}, 400, "model"),
    "unknown language": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"language": "klingon"}, 400, "language"),
    "bad granularity": (
        {"file": ("jfk.flac", JFK, "audio/flac")},
        {"response_format": "verbose_json", "timestamp_granularities[]": "sentence"},
        400,
        "timestamp_granularities",
    ),
    "beam_size zero": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"beam_size": "0"}, 400, "beam_size"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_then_good_request(http: httpx.Client, case: str) -> None:
    files, data, status, param = CASES[case]
    response = http.post(TRANSCRIPTIONS, files=materialise(files) or None, data=data)
    assert_openai_error(response, status, param)
    with fixture_path("hotwords.mp3").open("rb") as audio:
        good = http.post(TRANSCRIPTIONS, files={"file": audio})
    assert good.status_code == 200 and "folder" in good.json()["text"].lower()


def test_not_multipart_at_all(http: httpx.Client) -> None:
    response = http.post(TRANSCRIPTIONS, json={"file": "jfk.flac"})
    error = assert_openai_error(response, 400)
    assert error["code"] == "invalid_body" and "multipart/form-data" in error["message"]


def test_unknown_route_and_method_are_json(http: httpx.Client) -> None:
    assert_openai_error(http.get("/v1/nothing-here"), 404)
    assert_openai_error(http.get(TRANSCRIPTIONS), 405)


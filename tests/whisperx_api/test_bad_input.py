"""Every bad input is a 4xx with OpenAI's error JSON, and the next good request is served normally."""
from __future__ import annotations

import httpx
import pytest

from tests.audio_cases import Case, bad_audio_cases, fixture_bytes, materialise
from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_openai_error
from tests.whisperx_api.conftest import SMALL_UPLOAD_MB

JFK = fixture_bytes("jfk.flac")

CASES: dict[str, Case] = {
    **bad_audio_cases(),
    "missing file field": ({}, {"model": "tiny.en"}, 400, "file"),
    "unknown response_format": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"response_format": "docx"}, 400, "response_format"),
    "unknown model": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"model": "gigantic-v9"}, 404, "model"),
    "path as model": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"model": "../../etc/passwd"}, 400, "model"),
    "hub model not downloadable": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"model": "base"}, 404, "model"),
    "unknown language": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"language": "klingon"}, 400, "language"),
    "batch_size zero": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"batch_size": "0"}, 400, "batch_size"),
    "min_speakers zero": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"diarize": "true", "min_speakers": "0"}, 400, "min_speakers"),
    "diarize not a boolean": ({"file": ("jfk.flac", JFK, "audio/flac")}, {"diarize": "perhaps"}, 400, "diarize"),
    # dev00.wav twice is 3.7 MB, over the 3 MB limit
    f"upload over MAX_UPLOAD_MB={SMALL_UPLOAD_MB}": (
        {"file": ("big.wav", lambda: fixture_path("dev00.wav").read_bytes() * 2, "audio/wav")}, {}, 413, "file"
    ),
}


@pytest.mark.parametrize("route", ["/transcribe", "/v1/audio/transcriptions"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_then_good_request(http: httpx.Client, route: str, case: str) -> None:
    files, data, status, param = CASES[case]
    response = http.post(route, files=materialise(files) or None, data=data)
    error = assert_openai_error(response, status, param)
    if case == "hub model not downloadable":
        assert "'base'" in error["message"] and "Hugging Face" in error["message"]
    with fixture_path("hotwords.mp3").open("rb") as audio:
        good = http.post(route, files={"file": audio})
    assert good.status_code == 200, good.text

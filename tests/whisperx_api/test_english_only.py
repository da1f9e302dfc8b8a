"""One English-only check on every path of WhisperX, with whisper-faster's message (the shared
whisper_common.options.check_model_supports): `/transcribe`, the OpenAI route and a job at submit refuse German for
the English-only tiny.en before any audio is decoded."""
from __future__ import annotations

import httpx

from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_openai_error
from tests.whisper_faster.test_english_only import MESSAGE


def _audio() -> dict:
    return {"file": ("jfk.flac", fixture_path("jfk.flac").read_bytes(), "audio/flac")}


def test_every_route_and_job_submit_answer_alike(http: httpx.Client) -> None:
    jobs_before = http.get("/v1/jobs", params={"limit": 100}).json()["data"]
    for route, data in (
        ("/transcribe", {"language": "de"}),
        ("/v1/audio/transcriptions", {"language": "German", "response_format": "diarized_json"}),
        ("/v1/jobs", {"language": "de", "diarize": "true"}),
    ):
        error = assert_openai_error(http.post(route, files=_audio(), data=data), 400, "language")
        assert (error["message"], error["code"]) == (MESSAGE, "unsupported_task"), route
    assert http.get("/v1/jobs", params={"limit": 100}).json()["data"] == jobs_before
    assert http.post("/transcribe", files=_audio(), data={"language": "English"}).json()["language"] == "en"

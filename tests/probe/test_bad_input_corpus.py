"""A corpus of hostile-but-fair uploads against every transcription route of both services: each is a 4xx with
OpenAI's error JSON whose `param` and `code` name the problem, and the server still transcribes jfk.flac afterwards."""
from __future__ import annotations

import io
import os
import struct
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.probe.conftest import AUDIO_ROUTES
from tests.service_servers import Server
from tests.support import fixture_path
from tests.whisper_faster.helpers import assert_openai_error


def wav_bytes(*, channels: int = 1, rate: int = 16_000, seconds: float = 1.0, declared_seconds: float | None = None) -> bytes:
    """A PCM WAV; `declared_seconds` makes the header's data size claim more audio than follows it."""
    block = max(channels, 1) * 2
    payload = b"\0" * int(rate * seconds) * block if rate else b"\0" * 32_000
    declared = len(payload) if declared_seconds is None else int(rate * declared_seconds) * block
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return (
        b"RIFF" + struct.pack("<I", min(36 + declared, 0xFFFFFFFF)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", declared) + payload
    )


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89" + os.urandom(2000)


def first_bytes(name: str, count: int) -> Callable[[], bytes]:
    return lambda: fixture_path(name).read_bytes()[:count]


def fraction(name: str, keep: float) -> Callable[[], bytes]:
    def content() -> bytes:
        data = fixture_path(name).read_bytes()
        return data[: int(len(data) * keep)]

    return content


@dataclass(frozen=True)
class Case:
    status: int
    param: str | None
    code: str
    files: list[tuple[str, tuple[str, Any, str]]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    raw: tuple[bytes, str] | None = None  # (body, content type) sent as is
    says: str = ""  # a phrase the message must contain
    routes: tuple[str, ...] = ()  # only these "<service> <route>"s (default: every audio route)

    def request(self, client: httpx.Client, route: str, base_model: str) -> httpx.Response:
        if self.raw is not None:
            body, content_type = self.raw
            return client.post(route, content=body, headers={"content-type": content_type})
        if self.json is not None:
            return client.post(route, json=self.json)
        files = [(name, (filename, content() if callable(content) else content, media)) for name, (filename, content, media) in self.files]
        data = {"model": base_model, **self.data}  # the multilingual model: translation reaches the audio checks too
        return client.post(route, files=files or None, data=data)


def audio(filename: str, content: Any, media: str = "application/octet-stream") -> list[tuple[str, tuple[str, Any, str]]]:
    return [("file", (filename, content, media))]


FASTER = tuple(f"whisper-faster {route}" for route in AUDIO_ROUTES["whisper-faster"])
WHISPERX = tuple(f"whisperx {route}" for route in AUDIO_ROUTES["whisperx"])
OPENAI_TRANSCRIPTIONS = ("whisper-faster /v1/audio/transcriptions", "whisperx /v1/audio/transcriptions")
WITH_LANGUAGE = ("whisperx /transcribe", *OPENAI_TRANSCRIPTIONS)
WITH_SPEAKERS = ("whisperx /transcribe", "whisperx /v1/audio/transcriptions")
WITH_TEMPERATURE = (*FASTER, "whisperx /v1/audio/transcriptions", "whisperx /v1/audio/translations")

JFK = audio("jfk.flac", lambda: fixture_path("jfk.flac").read_bytes(), "audio/flac")
UNTERMINATED = (
    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="jfk.flac"\r\nContent-Type: audio/flac\r\n\r\n'
    + b"fLaC" + b"\0" * 4000,
    "multipart/form-data; boundary=XyZ",
)

CORPUS: dict[str, Case] = {
    "zero bytes": Case(400, "file", "empty_audio", audio("empty.wav", b"")),
    "random bytes": Case(400, "file", "invalid_audio", audio("noise.bin", os.urandom(30_000))),
    "text as .mp3": Case(400, "file", "invalid_audio", audio("notes.mp3", b"minutes of the meeting\n" * 300, "audio/mpeg")),
    "PNG": Case(400, "file", "invalid_audio", audio("picture.png", PNG, "image/png")),
    "WAV with 0 channels": Case(400, "file", "invalid_audio", audio("zero-channels.wav", wav_bytes(channels=0))),
    "WAV with rate 0": Case(400, "file", "invalid_audio", audio("zero-rate.wav", wav_bytes(rate=0))),
    "WAV with 0 seconds": Case(400, "file", "empty_audio", audio("empty.wav", wav_bytes(seconds=0))),
    "first 1000 bytes of a WAV": Case(400, "file", "truncated_audio", audio("cut.wav", first_bytes("sample.wav", 1000)), says="truncated"),
    "WAV header declaring 2 h, 1 s of data": Case(
        400, "file", "truncated_audio", audio("long.wav", wav_bytes(declared_seconds=7200)), says="truncated"
    ),
    "half a FLAC": Case(400, "file", "truncated_audio", audio("cut.flac", fraction("jfk.flac", 0.5))),
    "two file parts": Case(400, "file", "duplicate_parameter", JFK + JFK, says="2 times"),
    "no file field": Case(400, "file", "missing_parameter", [], {"language": "en"}, says="'file' is required"),
    "JSON instead of multipart": Case(400, None, "invalid_body", json={"file": "jfk.flac", "model": "tiny.en"}, says="multipart/form-data"),
    "unterminated multipart": Case(400, None, "incomplete_multipart", raw=UNTERMINATED, says="closing boundary"),
    "multipart without a boundary": Case(400, None, "invalid_body", raw=(UNTERMINATED[0], "multipart/form-data"), says="boundary"),
    "model ../../etc/passwd": Case(400, "model", "invalid_parameter", JFK, {"model": "../../etc/passwd"}, says="invalid model id"),
    "model /etc": Case(400, "model", "invalid_parameter", JFK, {"model": "/etc"}),
    "model C:\\Windows": Case(400, "model", "invalid_parameter", JFK, {"model": "C:\\Windows\\system32"}),
    "model owner/../x": Case(400, "model", "invalid_parameter", JFK, {"model": "owner/../x"}),
    "unknown model": Case(404, "model", "model_not_found", JFK, {"model": "gigantic-v9"}),
    "language klingon": Case(400, "language", "invalid_parameter", JFK, {"language": "klingon"}, routes=WITH_LANGUAGE),
    "language of 10 KB": Case(400, "language", "invalid_parameter", JFK, {"language": "x" * 10_000}, routes=WITH_LANGUAGE),
    "response_format docx": Case(400, "response_format", "invalid_parameter", JFK, {"response_format": "docx"}),
    "temperature nan": Case(400, "temperature", "invalid_parameter", JFK, {"temperature": "nan"}, says="finite", routes=WITH_TEMPERATURE),
    "temperature -inf": Case(400, "temperature", "invalid_parameter", JFK, {"temperature": "-inf"}, says="finite", routes=WITH_TEMPERATURE),
    "temperature 1e400": Case(400, "temperature", "invalid_parameter", JFK, {"temperature": "1e400"}, says="finite", routes=WITH_TEMPERATURE),
    "temperature 7": Case(400, "temperature", "invalid_parameter", JFK, {"temperature": "7"}, routes=WITH_TEMPERATURE),
    "beam_size a billion": Case(400, "beam_size", "invalid_parameter", JFK, {"beam_size": "1000000000"}, routes=FASTER),
    "beam_size not a number": Case(400, "beam_size", "invalid_parameter", JFK, {"beam_size": "wide"}, routes=FASTER),
    "timestamp granularity 'sentence'": Case(
        400, "timestamp_granularities", "invalid_parameter", JFK,
        {"response_format": "verbose_json", "timestamp_granularities[]": "sentence"}, routes=OPENAI_TRANSCRIPTIONS,
    ),
    "batch_size a million": Case(400, "batch_size", "invalid_parameter", JFK, {"batch_size": "1000000"}, routes=WHISPERX),
    "min_speakers above max_speakers": Case(
        400, "min_speakers", "invalid_parameter", JFK, {"diarize": "true", "min_speakers": "9", "max_speakers": "2"},
        routes=WITH_SPEAKERS,
    ),
}


def _cases(service_name: str) -> list[tuple[str, str]]:
    return [
        (route, name)
        for route in AUDIO_ROUTES[service_name]
        for name, case in CORPUS.items()
        if not case.routes or f"{service_name} {route}" in case.routes
    ]


def test_every_bad_input_is_a_4xx_naming_the_problem_then_jfk_is_transcribed(
    service: Server, service_name: str, base_model: str
) -> None:
    failures = []
    with service.client() as client:
        for route, name in _cases(service_name):
            case = CORPUS[name]
            response = case.request(client, route, base_model)
            try:
                error = assert_openai_error(response, case.status, case.param)
                assert error["code"] == case.code, error
                assert case.says in error["message"], error
            except AssertionError as exc:
                failures.append(f"{route} {name}: {exc}")
        assert not failures, "\n".join(failures)
        for route in AUDIO_ROUTES[service_name]:
            with fixture_path("jfk.flac").open("rb") as jfk:
                data = {"model": base_model} if route.endswith("translations") else {}
                response = client.post(route, files={"file": jfk}, data=data)
            assert response.status_code == 200, response.text
            body = response.json()
            text = body.get("text") or " ".join(segment["text"] for segment in body["segments"])
            assert "country" in text.lower(), (route, text)


@pytest.mark.parametrize(
    "model_id", ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a..b", "owner%2F..%2F..%2Fx", "x" * 300]
)
def test_model_ids_that_are_paths_are_400_on_the_models_route(faster: Server, model_id: str) -> None:
    response = httpx.get(f"{faster.base_url}/v1/models/{model_id}", timeout=30)
    error = assert_openai_error(response, 400, "model")
    assert "invalid model id" in error["message"]


def test_wav_helper_really_builds_what_it_claims() -> None:
    """The corpus's WAVs are what their names say (else a 400 would prove nothing)."""
    with wave.open(io.BytesIO(wav_bytes(seconds=1.0))) as reader:
        assert (reader.getnchannels(), reader.getframerate(), reader.getnframes()) == (1, 16_000, 16_000)
    lying = wav_bytes(declared_seconds=7200)
    assert struct.unpack("<I", lying[40:44])[0] == 7200 * 16_000 * 2 and len(lying) - 44 == 32_000

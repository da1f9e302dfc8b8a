"""Known speakers: diarized speakers named from reference clips (`known_speaker_names[]`, `known_speaker_references[]`).

dev00 and dev01 are two excerpts of the same AMI meeting with the same two voices (MEE009, MEE012 in
debug.development.rttm). The reference clips are cut from dev01 and the names are checked on dev00, so no
reference audio is part of the evaluated recording. A third, synthetic voice (espeak-ng) must match nobody.
"""
from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from openai.types.audio import TranscriptionDiarized

from tests.service_servers import Server
from tests.support import fixture_path, require
from tests.whisper_faster.helpers import assert_openai_error
from tests.wav import write_wav
from tests.whisperx_api.synth import SAMPLE_RATE, espeak_available

NAMES, REFERENCES = "known_speaker_names[]", "known_speaker_references[]"
# Reference turns in dev01 (debug.development.rttm), one voice each, 2-10 s.
DEV01_TURNS = {"Maria": (7.0, 11.8), "Tom": (4.3, 6.8)}  # MEE009, MEE012
# dev00 spans where only one of them speaks.
DEV00_SPANS = {"Maria": (1.5, 13.1), "Tom": (13.4, 16.8)}


def _decoded(name: str) -> np.ndarray:
    from whisper_common.uploads import decode_audio

    return decode_audio(str(fixture_path(name))).samples


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require(espeak_available(), "espeak-ng")
    folder = tmp_path_factory.mktemp("references")
    dev01 = _decoded("dev01.wav")
    paths = {
        name: write_wav(dev01[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)], folder / f"{name}.wav")
        for name, (start, end) in DEV01_TURNS.items()
    }
    robot = folder / "Robot.wav"
    text = "good morning everyone, this is a synthetic voice reading a few words for the meeting record"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(robot), text], check=True, capture_output=True)
    paths["Robot"] = robot
    return paths


def _words_in(body: dict, start: float, end: float) -> list[str | None]:
    return [
        word["speaker"]
        for segment in body["segments"]
        for word in segment["words"]
        if start <= (word["start"] + word["end"]) / 2 <= end
    ]


def test_names_land_on_their_speakers_turns(http: httpx.Client, clips: dict[str, Path]) -> None:
    names = ["Maria", "Tom", "Robot"]
    files = [("file", ("dev00.wav", fixture_path("dev00.wav").read_bytes(), "audio/wav"))]
    files += [(REFERENCES, (f"{name}.wav", clips[name].read_bytes(), "audio/wav")) for name in names]
    response = http.post("/transcribe", files=files, data={NAMES: names})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["diarization"] == "embedded"  # known speakers imply diarization
    for name, (start, end) in DEV00_SPANS.items():
        labels = _words_in(body, start, end)
        assert labels and labels.count(name) >= 0.8 * len(labels), (name, labels)
    speakers = {segment["speaker"] for segment in body["segments"]}
    assert "Robot" not in speakers and {"Maria", "Tom"} <= speakers


def test_openai_client_sends_data_urls_and_unmatched_speakers_keep_letters(server: Server, clips: dict[str, Path]) -> None:
    """As a user would: the `openai` client sends the clip as a data URL. Only Maria is known here, so the other
    voice keeps a letter."""
    url = "data:audio/wav;base64," + base64.b64encode(clips["Maria"].read_bytes()).decode()
    client = openai.OpenAI(base_url=server.v1, api_key="unused", timeout=300)
    with fixture_path("dev00.wav").open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=audio, response_format="diarized_json",
            known_speaker_names=["Maria"], known_speaker_references=[url],
        )
    diarized = TranscriptionDiarized.model_validate(result.model_dump(exclude_unset=True), strict=True)
    speakers = [segment.speaker for segment in diarized.segments]
    assert "Maria" in speakers and set(speakers) - {"Maria"} <= {"A", "B", "C"}
    first_maria = next(segment for segment in diarized.segments if segment.speaker == "Maria")
    assert first_maria.start < DEV00_SPANS["Maria"][1]


def _tone(seconds: float, amplitude: float = 0.2) -> bytes:
    import io
    import wave

    samples = (amplitude * np.sin(2 * np.pi * 220 * np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("route", "names", "references", "param", "phrase"),
    [
        ("/transcribe", ["Ann"], [b"this is not audio at all"], REFERENCES, "not usable audio"),
        ("/transcribe", ["Ann"], [_tone(1.0)], REFERENCES, "2-10 s"),
        ("/transcribe", ["Ann"], [_tone(11.0)], REFERENCES, "2-10 s"),
        ("/transcribe", ["Ann"], [_tone(3.0, amplitude=0.0)], REFERENCES, "silent"),
        ("/transcribe", ["Ann", "Bob"], [_tone(3.0)], NAMES, "one clip per name"),
        ("/transcribe", ["Ann"], [_tone(3.0), _tone(3.0)], REFERENCES, "one name per clip"),
        ("/v1/audio/transcriptions", ["Ann", "Ann"], [_tone(3.0), _tone(3.0)], NAMES, "twice"),
        ("/v1/audio/transcriptions", ["A", "B", "C", "D", "E"], [_tone(3.0)] * 5, NAMES, "at most 4"),
        ("/v1/audio/transcriptions", ["Ann"], ["data:audio/wav;base64,%%%"], REFERENCES, "base64"),
        ("/v1/audio/transcriptions", ["Ann"], ["https://example.com/ann.wav"], REFERENCES, "data URL"),
    ],
)
def test_bad_known_speakers_are_400_naming_the_field(
    http: httpx.Client, route: str, names: list[str], references: list[bytes | str], param: str, phrase: str
) -> None:
    files = [("file", ("jfk.flac", fixture_path("jfk.flac").read_bytes(), "audio/flac"))]
    data: dict[str, object] = {NAMES: names}
    if references and isinstance(references[0], str):
        data[REFERENCES] = references
    else:
        files += [(REFERENCES, (f"ref{index}.wav", clip, "audio/wav")) for index, clip in enumerate(references)]
    error = assert_openai_error(http.post(route, files=files, data=data), 400, param)
    assert phrase in error["message"], error["message"]


def test_known_speakers_with_pyannote_turns() -> None:
    """The pyannote path: its gated pipeline cannot run here (no hub token), so a stand-in returns dev00's
    reference turns as a pyannote Annotation; PyannoteDiarizer and the real speaker encoder do the rest."""
    from pyannote.core import Annotation, Segment

    from tests.whisperx_api.der import reference
    from whisperx_api.diarize.base import SpeakerBounds
    from whisper_common.speakers.encoder import SpeakerEncoder
    from whisperx_api.diarize.known import KnownSpeaker, SpeakerMatcher
    from whisperx_api.diarize.pyannote import PyannoteDiarizer

    truth = reference("dev00")

    def pipeline(_audio: dict, **_bounds: object) -> Annotation:
        output = Annotation(uri="dev00")
        for turn, _, label in truth.itertracks(yield_label=True):
            output[Segment(turn.start, turn.end)] = f"pyannote-{label}"
        return output

    audio, dev01 = _decoded("dev00.wav"), _decoded("dev01.wav")
    turns = PyannoteDiarizer(pipeline)(audio, SpeakerBounds())
    known = tuple(
        KnownSpeaker(name, dev01[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
        for name, (start, end) in DEV01_TURNS.items()
    )
    named, matches = SpeakerMatcher(SpeakerEncoder()).name_speakers(audio, turns, known)
    assert set(matches) == set(DEV01_TURNS) and all(match.similarity >= 0.84 for match in matches.values())
    by_name = {name: sum(t.end - t.start for t in named if t.speaker == name) for name in DEV01_TURNS}
    assert by_name["Maria"] > 10 and by_name["Tom"] > 5, by_name
    for name, (start, end) in DEV00_SPANS.items():
        inside = [turn for turn in named if turn.start >= start - 0.5 and turn.end <= end + 0.5]
        assert inside and all(turn.speaker == name for turn in inside), (name, inside)

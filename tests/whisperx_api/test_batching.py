"""whisperx through the batch scheduler on a real server (embedded tiny.en): requests decoded together keep their own
words, a long recording decodes window by window with word timings in order (no word lost or doubled at a seam), a
short request keeps its turn beside a long one, and a client gone mid-batch or a file that stops decoding half-way
fails alone, leaving the scheduler idle."""
from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.service_servers import Server, ServerFactory
from tests.support import fixture_path
from tests.wav import meeting_recording
from whisper_common.uploads import SAMPLE_RATE, decode_audio

CLIPS = ("jfk.flac", "sample.wav", "dev00.wav", "dev01.wav")
JFK_PHRASE = "ask not what your country can do for you"


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> Iterator[Server]:
    with start_server("whisperx-batching", MAX_CONCURRENCY="8", SCHEDULER__MAX_WAIT_MS="300") as running:
        yield running


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return meeting_recording(tmp_path_factory.mktemp("recording"))


def transcribe(client: httpx.Client, path: Path, **data: str) -> httpx.Response:
    with path.open("rb") as audio:
        return client.post("/transcribe", files={"file": (path.name, audio)}, data={"diarize": "false", **data})


def words_of(body: dict) -> list[dict]:
    return [word for segment in body["segments"] for word in segment["words"]]


def assert_idle(client: httpx.Client, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in client.get("/metrics").text.splitlines() if line.startswith("whisperx_batch_")]
        queued = sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("whisperx_batch_queued_ops"))
        streams = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("whisperx_batch_open_streams")]
        if queued == 0 and streams == [0.0]:
            return
        assert time.monotonic() < deadline, f"scheduler not idle: {queued} queued, {streams} streams"
        time.sleep(0.2)


def test_requests_sent_together_keep_their_own_words(server: Server) -> None:
    with server.client() as client:
        alone = {name: [w["word"] for w in words_of(transcribe(client, fixture_path(name)).json())] for name in CLIPS}
        barrier = threading.Barrier(len(CLIPS))

        def together(name: str) -> list[str]:
            with server.client() as own:
                barrier.wait(30)
                response = transcribe(own, fixture_path(name))
                assert response.status_code == 200, response.text
                return [w["word"] for w in words_of(response.json())]

        with ThreadPoolExecutor(len(CLIPS)) as pool:
            answers = dict(zip(CLIPS, pool.map(together, CLIPS)))
        assert answers == alone
        metrics = client.get("/metrics").text
        count = float(re.search(r'^whisperx_batch_rows_count\{op="encode"\} (\S+)$', metrics, re.M).group(1))
        ones = float(re.search(r'^whisperx_batch_rows_bucket\{le="1.0",op="encode"\} (\S+)$', metrics, re.M).group(1))
        assert count > ones, "no encoder batch held two requests' windows"
        assert_idle(client)


def test_a_long_recording_decodes_in_windows_without_losing_or_doubling_words(server: Server, recording: Path) -> None:
    with server.client() as client:
        body = transcribe(client, recording).json()
        clip_words = sum(len(words_of(transcribe(client, fixture_path(name)).json())) for name in ("sample.wav", "dev00.wav", "dev01.wav", "jfk.flac"))
    words = words_of(body)
    assert abs(len(words) - 3 * clip_words) <= 0.05 * 3 * clip_words, (len(words), 3 * clip_words)
    text = re.sub(r"[^a-z ]", "", " ".join(word["word"] for word in words).lower())
    assert text.count(JFK_PHRASE) == 3
    starts = [word["start"] for word in words]
    assert starts == sorted(starts)
    assert words[-1]["end"] <= len(decode_audio(str(recording)).samples) / SAMPLE_RATE + 0.05


def test_a_short_request_keeps_its_turn_beside_a_long_one(server: Server, recording: Path) -> None:
    """The long recording's groups of windows interleave with the short request's calls (least attained service
    first): jfk waits at most for the group running when it arrives, not for the whole recording. The long request
    groups 2 windows (`batch_size=2`): with the default 8, this 3.5-minute recording would be one group, one call."""
    with server.client() as client:
        idle = min(_timed(client, fixture_path("jfk.flac")) for _ in range(2))
        started = time.monotonic()
        long = ThreadPoolExecutor(1).submit(transcribe, client, recording, batch_size="2")
        time.sleep(3)  # its first group is decoding
        beside = _timed(client, fixture_path("jfk.flac"))
        short_done = time.monotonic() - started
        assert not long.done(), "the long request ended before the short one ran"
        response = long.result(600)
        long_done = time.monotonic() - started
        assert response.status_code == 200, response.text
        assert_idle(client)
    assert short_done < 0.6 * long_done, (short_done, long_done, beside, idle)  # not stuck behind the whole file
    assert _said(response).count(JFK_PHRASE) == 3


def _timed(client: httpx.Client, path: Path) -> float:
    started = time.monotonic()
    response = transcribe(client, path)
    assert response.status_code == 200 and JFK_PHRASE in _said(response)
    return time.monotonic() - started


def _said(response: httpx.Response) -> str:
    return re.sub(r"[^a-z ]", "", " ".join(word["word"] for word in words_of(response.json())).lower())


def test_a_client_gone_mid_batch_leaves_the_others(server: Server, recording: Path) -> None:
    with server.client() as client:
        gone = threading.Thread(target=_leave_after, args=(server, recording, 3.0))
        gone.start()
        time.sleep(1.0)
        response = transcribe(client, fixture_path("jfk.flac"))
        assert response.status_code == 200
        assert JFK_PHRASE in re.sub(r"[^a-z ]", "", " ".join(w["word"] for w in words_of(response.json())).lower())
        gone.join(30)
        assert_idle(client)


def _leave_after(server: Server, path: Path, seconds: float) -> None:
    with server.client(timeout=seconds) as client, pytest.raises(httpx.ReadTimeout):
        transcribe(client, path)


def test_a_file_that_stops_decoding_half_way_fails_alone(server: Server, recording: Path, tmp_path: Path) -> None:
    flac = tmp_path / "meeting.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(recording), str(flac)], check=True)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    with server.client() as client:
        other = ThreadPoolExecutor(1).submit(transcribe, client, fixture_path("sample.wav"))
        broken = transcribe(client, cut)
        assert broken.status_code == 400 and broken.json()["error"]["code"] == "truncated_audio", broken.text
        response = other.result(120)
        assert response.status_code == 200 and "new jersey" in response.text.lower()
        assert_idle(client)

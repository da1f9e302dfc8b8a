"""Batching across requests, windows and fair turns through a real whisper-faster server (embedded tiny.en): requests
decoded together keep their own answers, a long recording decodes in windows (no word lost or doubled at a seam,
streamed window by window), jobs give way to requests, a short request keeps its turn beside a long one, and bad input (a client gone mid-batch, a job canceled while
its windows wait, a file that stops decoding half-way) fails alone, leaving the scheduler idle."""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.jobs.helpers import submit, wait_for
from tests.service_servers import JFK_REFERENCE, Server, ServerFactory
from tests.support import fixture_path
from tests.wav import MEETING_REPEATS, meeting_recording
from tests.whisper_faster.helpers import word_error_rate
from whisper_common.uploads import SAMPLE_RATE, decode_audio

TRANSCRIPTIONS = "/v1/audio/transcriptions"
CLIPS = ("jfk.flac", "sample.wav", "dev00.wav", "dev01.wav")
JFK_PHRASE = "ask not what your country can do for you"


@pytest.fixture(scope="module")
def server(start_server: ServerFactory) -> Iterator[Server]:
    """Batches wait up to 300 ms to fill, so requests sent together surely share them."""
    with start_server("whisper_faster-batching", MAX_CONCURRENCY="8", SCHEDULER__MAX_WAIT_MS="300") as running:
        yield running


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """tests.wav's meeting recording (several windows), and how many times jfk is in it."""
    return meeting_recording(tmp_path_factory.mktemp("recording")), MEETING_REPEATS


def transcribe(client: httpx.Client, path: Path, **data: object) -> httpx.Response:
    with path.open("rb") as audio:
        return client.post(TRANSCRIPTIONS, files={"file": (path.name, audio)}, data={"temperature": "0", **data})


def metrics(client: httpx.Client) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("whisper_faster_batch_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def assert_idle(client: httpx.Client, timeout: float = 20) -> None:
    """Nothing queued, no stream open: what a bad request leaves behind once it is answered."""
    deadline = time.monotonic() + timeout
    while True:
        found = metrics(client)
        queued = sum(value for name, value in found.items() if name.startswith("whisper_faster_batch_queued_ops"))
        streams = found.get("whisper_faster_batch_open_streams", -1)
        if queued == 0 and streams == 0:
            return
        assert time.monotonic() < deadline, f"scheduler not idle: {queued} queued, {streams} streams"
        time.sleep(0.2)


def rss_mb(server: Server) -> float:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def multi_row_batches(client: httpx.Client, op: str) -> float:
    found = metrics(client)
    return found.get(f'whisper_faster_batch_rows_count{{op="{op}"}}', 0) - found.get(
        f'whisper_faster_batch_rows_bucket{{le="1.0",op="{op}"}}', 0
    )


def test_requests_sent_together_share_batches_and_keep_their_own_answers(server: Server) -> None:
    with server.client() as client:
        alone = {name: transcribe(client, fixture_path(name)).json()["text"] for name in CLIPS}
        shared_before = multi_row_batches(client, "encode")
        barrier = threading.Barrier(len(CLIPS))

        def together(name: str) -> str:
            with server.client() as own:
                barrier.wait(30)
                response = transcribe(own, fixture_path(name))
                assert response.status_code == 200, response.text
                return response.json()["text"]

        with ThreadPoolExecutor(len(CLIPS)) as pool:
            answers = dict(zip(CLIPS, pool.map(together, CLIPS)))
        assert answers == alone  # decoding is batch-invariant at temperature 0
        assert multi_row_batches(client, "encode") > shared_before, "no encoder batch held two requests' windows"
        assert_idle(client)


def test_a_long_recording_decodes_in_windows_without_losing_or_doubling_words(server: Server, recording: tuple[Path, int]) -> None:
    path, jfk_copies = recording
    with server.client() as client:
        body = transcribe(client, path, response_format="verbose_json", **{"timestamp_granularities[]": ["word", "segment"]}).json()
        clip_words = sum(len(transcribe(client, fixture_path(name)).json()["text"].split()) for name in ("sample.wav", "dev00.wav", "dev01.wav", "jfk.flac"))
        windows = metrics(client).get('whisper_faster_batch_rows_sum{op="encode"}', 0)
    duration = len(decode_audio(str(path)).samples) / SAMPLE_RATE
    assert body["duration"] == pytest.approx(duration, abs=0.05)
    words = len(body["text"].split())
    assert abs(words - 3 * clip_words) <= 0.05 * 3 * clip_words, (words, 3 * clip_words)
    normalized = re.sub(r"[^a-z ]", "", body["text"].lower())
    assert normalized.count(JFK_PHRASE) == jfk_copies
    starts = [segment["start"] for segment in body["segments"]]
    assert starts == sorted(starts) and body["segments"][-1]["end"] <= duration + 0.05
    assert [segment["id"] for segment in body["segments"]] == list(range(len(body["segments"])))
    word_starts = [word["start"] for word in body["words"]]
    assert word_starts == sorted(word_starts)
    assert windows >= 7  # 3.5 minutes is at least seven windows of 30 s


def test_streaming_a_long_recording_sends_each_window_as_it_is_done(server: Server, recording: tuple[Path, int]) -> None:
    path, _ = recording
    arrivals: list[float] = []
    deltas: list[str] = []
    done = ""
    with server.client() as client:
        started = time.monotonic()
        with path.open("rb") as audio, client.stream(
            "POST", TRANSCRIPTIONS, files={"file": (path.name, audio)}, data={"stream": "true", "temperature": "0"}
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    event = __import__("json").loads(line[6:])
                    arrivals.append(time.monotonic() - started)
                    if event["type"] == "transcript.text.delta":
                        deltas.append(event["delta"])
                    else:
                        done = event["text"]
        plain = transcribe(client, path).json()["text"]
    assert done == plain == "".join(deltas).strip()
    assert arrivals[0] < 0.6 * arrivals[-1], "the first window's text came only at the end"


# The two checks below compare the short request's time with what was left of the long work when it arrived (both
# measured in the same run), not with a fixed multiple of its idle latency. How long it waits beside a long file is
# issue 20's benchmark (bench.bench_batching, "long"). A fixed bound on this shared machine's 2 cores failed once here
# (2.55 s against 3 x 0.43 + 1), while the short request still finished long before the long one.


def test_a_job_gives_way_to_a_request(server: Server, recording: tuple[Path, int]) -> None:
    path, jfk_copies = recording
    with server.client() as client:
        idle = min(_timed(client, fixture_path("jfk.flac")) for _ in range(2))
        job_id = submit(client, path, temperature="0").json()["id"]
        wait_for(client, job_id, {"running"}, timeout=60)
        time.sleep(2)  # its windows are decoding
        sent = time.monotonic()
        beside = _timed(client, fixture_path("jfk.flac"))
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running", "the job ended before the request ran"
        job = wait_for(client, job_id, timeout=600)
        job_left = time.monotonic() - sent  # the job's work from the request's arrival on
        assert job["status"] == "succeeded"
        text = client.get(f"/v1/jobs/{job_id}/result", params={"response_format": "text"}).text
    # it did not wait for the rest of the job's 3.5 minutes of audio
    assert beside < 0.6 * job_left, (beside, job_left, idle)
    assert re.sub(r"[^a-z ]", "", text.lower()).count(JFK_PHRASE) == jfk_copies


def test_a_short_request_keeps_its_turn_beside_a_long_one(server: Server, recording: tuple[Path, int]) -> None:
    """Two synchronous requests: the long recording's windows interleave with the short one's (least attained
    service first), so the short one does not wait for the long one's 3.5 minutes."""
    path, jfk_copies = recording
    with server.client() as client:
        idle = min(_timed(client, fixture_path("jfk.flac")) for _ in range(2))
        long = ThreadPoolExecutor(1).submit(transcribe, client, path)
        time.sleep(3)  # its first windows are decoding
        sent = time.monotonic()
        beside = _timed(client, fixture_path("jfk.flac"))
        assert not long.done(), "the long request ended before the short one ran"
        response = long.result(600)
        long_left = time.monotonic() - sent  # the long request's work from the short one's arrival on
        assert response.status_code == 200, response.text
        assert_idle(client)
    assert beside < 0.6 * long_left, (beside, long_left, idle)  # not stuck behind the rest of the file
    assert re.sub(r"[^a-z ]", "", response.json()["text"].lower()).count(JFK_PHRASE) == jfk_copies


def _timed(client: httpx.Client, path: Path) -> float:
    started = time.monotonic()
    response = transcribe(client, path)
    assert response.status_code == 200 and word_error_rate(JFK_REFERENCE, response.json()["text"]) <= 0.1
    return time.monotonic() - started


# -- bad input: each fails alone, and leaves nothing queued ----------------------------------------------------------


def test_a_client_gone_mid_batch_leaves_the_others(server: Server, recording: tuple[Path, int]) -> None:
    path, _ = recording
    with server.client() as client:
        transcribe(client, fixture_path("jfk.flac"))
        before = rss_mb(server)
        for _ in range(2):
            gone = threading.Thread(target=_leave_after, args=(server, path, 3.0))
            gone.start()
            time.sleep(1.0)
            response = transcribe(client, fixture_path("jfk.flac"))
            assert response.status_code == 200 and word_error_rate(JFK_REFERENCE, response.json()["text"]) <= 0.1
            gone.join(30)
            assert_idle(client)
        # Back near where it was, within a few seconds: one reading just after the scheduler went idle caught a
        # passing peak once (+155 MB; a probe of 8 gone clients read 608-623 MB after each, once 777 MB, then 623 again).
        # A leak never comes back down.
        deadline = time.monotonic() + 10
        while (grown := rss_mb(server) - before) >= 150 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert grown < 150, f"RSS grew by {grown:.0f} MB and stayed up"


def _leave_after(server: Server, path: Path, seconds: float) -> None:
    with server.client(timeout=seconds) as client, pytest.raises(httpx.ReadTimeout):
        transcribe(client, path)


def test_a_job_canceled_while_its_windows_wait(server: Server, recording: tuple[Path, int]) -> None:
    path, _ = recording
    with server.client() as client:
        job_id = submit(client, path).json()["id"]
        wait_for(client, job_id, {"running"}, timeout=60)
        request = ThreadPoolExecutor(1).submit(transcribe, client, fixture_path("sample.wav"))
        time.sleep(1.0)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 202
        assert wait_for(client, job_id, timeout=60)["status"] == "canceled"
        response = request.result(120)
        assert response.status_code == 200 and "new jersey" in response.json()["text"].lower()
        assert_idle(client)


def test_a_file_that_stops_decoding_half_way_fails_alone(server: Server, recording: tuple[Path, int], tmp_path: Path) -> None:
    """A FLAC cut at half its length: its header declares the whole; the decoder finds the end after several
    windows were decoded (alongside another request's)."""
    import subprocess

    path, _ = recording
    flac = tmp_path / "meeting.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), str(flac)], check=True)
    cut = tmp_path / "cut.flac"
    data = flac.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with server.client() as client:
        other = ThreadPoolExecutor(1).submit(transcribe, client, fixture_path("sample.wav"))
        broken = transcribe(client, cut)
        assert broken.status_code == 400, broken.text
        assert broken.json()["error"]["code"] == "truncated_audio"
        response = other.result(120)
        assert response.status_code == 200 and "new jersey" in response.json()["text"].lower()
        with cut.open("rb") as audio, client.stream(
            "POST", TRANSCRIPTIONS, files={"file": ("cut.flac", audio)}, data={"stream": "true"}
        ) as streamed:
            events = [line for line in streamed.iter_lines() if line.startswith("data: ")]
        assert len(events) >= 2 and '"delta"' in events[0] and "truncated_audio" in events[-1]
        assert_idle(client)

"""What both services' "no invented words" tests share (issue 22): the non-speech corpus written once per test module,
each path's answer for a file (synchronous, SSE streaming, a job), and speech with long gaps between its sentences.

    clips = corpus_files(tmp_path_factory)               # {name: path}: tests/non_speech.py, short clips
    body = verbose(http, path)                             # POST /v1/audio/transcriptions, verbose_json
    events = streamed(http, path)                          # the same with stream=true: the SSE events
    body = job_result(http, path)                          # POST /v1/jobs, then its verbose_json result
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.non_speech import SAMPLE_RATE, corpus, tools_available, write_corpus
from tests.support import fixture_path, require

CLIP_SECONDS = 6.0
"""Short clips keep the suite quick; Whisper pads every window to 30 s anyway."""
GAP_SECONDS = 30.0


def corpus_files(factory: pytest.TempPathFactory) -> dict[str, Path]:
    require(tools_available(), "sox and espeak-ng (the non-speech corpus)")
    return write_corpus(factory.mktemp("non-speech"), CLIP_SECONDS)


def corpus_names() -> list[str]:
    return [clip.name for clip in corpus()]


def verbose(http: httpx.Client, path: Path, route: str = "/v1/audio/transcriptions", **fields: Any) -> dict[str, Any]:
    """verbose_json on an OpenAI route; `/transcribe` (WhisperX's own json) when `route` says so."""
    format_ = {"response_format": "verbose_json"} if route.startswith("/v1/") else {}
    with path.open("rb") as audio:
        response = http.post(route, files={"file": (path.name, audio)}, data={**format_, **fields})
    assert response.status_code == 200, response.text
    return response.json()


def streamed(http: httpx.Client, path: Path, **fields: str) -> list[dict[str, Any]]:
    with path.open("rb") as audio, http.stream(
        "POST", "/v1/audio/transcriptions", files={"file": (path.name, audio)},
        data={"stream": "true", **fields},
    ) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: ")]


def submit_job(http: httpx.Client, path: Path, **fields: str) -> str:
    with path.open("rb") as audio:
        response = http.post("/v1/jobs", files={"file": (path.name, audio)}, data=fields)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def job_result(http: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            assert job["status"] == "succeeded", job
            result = http.get(f"/v1/jobs/{job_id}/result", params={"response_format": "verbose_json"})
            assert result.status_code == 200, result.text
            return result.json()
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def assert_no_text(body: dict[str, Any], what: str) -> None:
    """OpenAI's verbose_json shape (or WhisperX's json, which has no `text`), with nothing in it."""
    assert body.get("text", "") == "", f"{what}: {body['text']!r}"
    assert body.get("segments", []) == [], f"{what}: {body['segments']}"
    assert body.get("words") in (None, []), what


def assert_no_streamed_text(events: list[dict[str, Any]], what: str) -> None:
    assert events and events[-1]["type"] == "transcript.text.done", f"{what}: {events}"
    assert events[-1]["text"] == "", f"{what}: {events[-1]}"
    assert not [event for event in events if event.get("delta")], f"{what}: {events}"


def suppressed(metrics_text: str, namespace: str, reason: str) -> float:
    line = f'{namespace}_hallucinations_suppressed_total{{reason="{reason}"}} '
    return float(next(row for row in metrics_text.splitlines() if row.startswith(line)).split()[-1])


# -- speech with long gaps ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GappedSpeech:
    path: Path
    spans: list[tuple[float, float]]
    """Where the sentences are (seconds)."""


def gapped_jfk(folder: Path, gap: np.ndarray, name: str, flac: bool = False) -> GappedSpeech:
    """jfk's two sentences with `gap` (30 s) before, between and after them (as FLAC: a third of the WAV's size)."""
    from whisper_common.uploads import decode_audio

    jfk = decode_audio(str(fixture_path("jfk.flac"))).samples
    cut = int(5.2 * SAMPLE_RATE)
    pieces, spans, offset = [], [], 0
    for sentence in (jfk[:cut], jfk[cut:]):
        pieces += [gap, sentence]
        offset += len(gap)
        spans.append((offset / SAMPLE_RATE, (offset + len(sentence)) / SAMPLE_RATE))
        offset += len(sentence)
    pieces.append(gap)
    path = folder / f"jfk-{name}-gaps.wav"
    _write(path, np.concatenate(pieces))
    if flac:
        import subprocess

        subprocess.run(["sox", str(path), str(path.with_suffix(".flac"))], check=True, capture_output=True)
        path = path.with_suffix(".flac")
    return GappedSpeech(path, spans)


def gaps(corpus_paths: dict[str, Path]) -> dict[str, np.ndarray]:
    """30 s of silence, of pink noise and of the telephone line's hiss (the corpus clips looped)."""
    from whisper_common.uploads import decode_audio

    length = int(GAP_SECONDS * SAMPLE_RATE)

    def looped(name: str) -> np.ndarray:
        samples = decode_audio(str(corpus_paths[name])).samples
        return np.tile(samples, int(np.ceil(length / len(samples))))[:length]

    return {"silence": np.zeros(length, dtype=np.float32), "pink noise": looped("pink noise -35 dBFS"),
            "telephone hiss": looped("telephone line hiss")}


def assert_inside(body: dict[str, Any], spans: list[tuple[float, float]], slack: float = 1.0) -> None:
    """Every word lies within a sentence (give or take `slack` seconds), and every segment overlaps one: nothing in
    the gaps. (A segment may hold words from both sides of a gap when the speaker paused mid-sentence.)"""
    def inside(start: float, end: float) -> bool:
        return any(first - slack <= start and end <= last + slack for first, last in spans)

    words = body.get("words") or [word for segment in body["segments"] for word in segment.get("words") or ()]
    assert words, body
    for word in words:
        assert inside(word["start"], word["end"]), (word, spans)
    for segment in body["segments"]:
        assert any(segment["start"] < last and segment["end"] > first for first, last in spans), (segment, spans)


def _write(path: Path, samples: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())

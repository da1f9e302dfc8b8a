"""Word timings on a clip synthesized word by word (espeak-ng) with known silences: every true boundary is known."""
from __future__ import annotations

import statistics
from pathlib import Path

import httpx

from tests.support import require
from tests.wav import write_wav
from tests.whisperx_api.synth import boundary_errors, build_clip, espeak_available

MAX_MEDIAN_BOUNDARY_ERROR = 0.150


def test_word_boundaries_within_150_ms(http: httpx.Client, tmp_path: Path) -> None:
    require(espeak_available(), "espeak-ng")
    samples, truth = build_clip()
    clip = write_wav(samples, tmp_path / "words.wav")
    with clip.open("rb") as audio:
        response = http.post("/transcribe", files={"file": ("words.wav", audio, "audio/wav")})
    assert response.status_code == 200, response.text
    body = response.json()
    words = [word for segment in body["segments"] for word in segment["words"]]
    errors = boundary_errors(truth, words)
    median = statistics.median(errors)
    print(f"\nword boundaries: {len(errors) // 2}/{len(truth)} words matched, median |error| {median * 1000:.0f} ms, "
          f"alignment={body['alignment']}")
    assert len(errors) // 2 >= len(truth) * 0.7, words
    assert median <= MAX_MEDIAN_BOUNDARY_ERROR
    assert body["alignment"] in ("wav2vec2", "whisper-cross-attention")


def test_numbers_get_timings(http: httpx.Client, tmp_path: Path) -> None:
    require(espeak_available(), "espeak-ng")
    samples, _ = build_clip("the meeting starts at 9 and costs 42 dollars", (0.3,))
    clip = write_wav(samples, tmp_path / "numbers.wav")
    with clip.open("rb") as audio:
        body = http.post("/transcribe", files={"file": ("numbers.wav", audio, "audio/wav")}).json()
    words = [word for segment in body["segments"] for word in segment["words"]]
    numeric = [word for word in words if any(char.isdigit() for char in word["word"])]
    assert numeric, words
    for word in words:
        assert 0 <= word["start"] < word["end"] <= len(samples) / 16000 + 0.01, word
    starts = [word["start"] for word in words]
    assert starts == sorted(starts)

"""The speech set of the speech-guard benchmark (issue 22): jfk.flac, sample.wav, the AMI excerpts dev00/dev01 and the
10-minute recording of `bench.bench_whisperx.long_recording` (the fixtures repeated with 0.5 s pauses), each with a
reference transcript for WER.

Published references: jfk (the faster-whisper tests' text) and sample.wav (its STM). The AMI excerpts and
stereo_diarization.wav (two voices mixed to mono) have none here, so theirs is a *pseudo-reference*: Whisper `base`
(multilingual, assembled by tests/multilingual_model.py), beam 5, temperature 0, English. It is a fixed yardstick, good
enough to show whether the guard drops speech (WER against it rises when words go missing); it is not a true WER. The
10-minute recording's reference is its pieces' references in order (the last piece, cut short, by `base` too).

    refs = references()                       # {"jfk.flac": "...", ..., "10-minute": "..."}; cached in .cache/
"""
from __future__ import annotations

import json
import re

import numpy as np

from bench.bench_whisperx import JFK_TEXT, long_recording, stm_text
from bench.whisperx_clips import SAMPLE_RATE, decode
from tests.support import ROOT

FILES = ("jfk.flac", "sample.wav", "dev00.wav", "dev01.wav")
LONG = "10-minute"
LONG_SECONDS = 600.0
PIECES = ("sample.wav", "dev00.wav", "dev01.wav", "jfk.flac", "stereo_diarization.wav")
"""The order `long_recording` joins the fixtures in (0.5 s pauses)."""
PAUSE = 0.5
CACHE = ROOT / ".cache" / "speech-guard"


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def word_count(text: str) -> int:
    return len(normalized(text).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalized(reference), normalized(hypothesis) or "<empty>"))


def long_samples(seconds: float = LONG_SECONDS) -> np.ndarray:
    return long_recording(seconds).samples


def long_pieces(seconds: float = LONG_SECONDS) -> list[tuple[str, float]]:
    """(fixture, seconds of it kept) in the long recording's order: whole pieces, then the last one cut short."""
    lengths = {name: len(decode(name)) / SAMPLE_RATE for name in PIECES}
    pieces, offset, index = [], 0.0, 0
    while offset < seconds:
        name = PIECES[index % len(PIECES)]
        index += 1
        pieces.append((name, min(lengths[name], seconds - offset)))
        offset += lengths[name] + PAUSE
    return pieces


def references(seconds: float = LONG_SECONDS) -> dict[str, str]:
    """Every file's reference (pseudo-references computed once with Whisper base, then read from .cache/)."""
    cache = CACHE / f"references-{seconds:g}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    published = {"jfk.flac": JFK_TEXT, "sample.wav": stm_text("sample.stm")}
    model = _base_model()
    pseudo: dict[str, str] = {}

    def reference(name: str, kept: float | None = None) -> str:
        if name in published and kept is None:
            return published[name]
        key = name if kept is None else f"{name}[:{kept:.2f}]"
        if key not in pseudo:
            samples = decode(name) if kept is None else decode(name)[: int(kept * SAMPLE_RATE)]
            segments, _ = model.transcribe(samples, language="en", beam_size=5, temperature=0.0)
            pseudo[key] = "".join(segment.text for segment in segments).strip()
        return pseudo[key]

    lengths = {name: len(decode(name)) / SAMPLE_RATE for name in PIECES}
    result = {name: reference(name) for name in FILES}
    result[LONG] = " ".join(
        reference(name, None if abs(kept - lengths[name]) < 1e-6 else kept) for name, kept in long_pieces(seconds)
    )
    CACHE.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=1))
    return result


def _base_model():  # -> faster_whisper.WhisperModel
    from faster_whisper import WhisperModel

    from tests.multilingual_model import whisper_base_dir

    return WhisperModel(str(whisper_base_dir()), device="cpu", compute_type="int8", cpu_threads=2)


def file_samples(name: str) -> np.ndarray:
    return long_samples() if name == LONG else decode(name)


def _check_pieces() -> None:
    """The pieces add up to the recording `long_recording` makes (its join is the source of truth)."""
    total = sum(kept for _, kept in long_pieces()) + PAUSE * (len(long_pieces()) - 1)
    assert abs(total - len(long_samples()) / SAMPLE_RATE) < 0.6, total


if __name__ == "__main__":
    _check_pieces()
    for name, text in references().items():
        print(f"{name}: {word_count(text)} words: {text[:120]}...")

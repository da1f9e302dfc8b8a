"""A clip synthesized word by word with espeak-ng and joined with known silences, so every word's true start and
end are known."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
SENTENCE = "the quick brown fox jumps over the lazy dog near 42 green houses"
GAPS_SECONDS = (0.15, 0.30, 0.45, 0.25, 0.60, 0.20, 0.35, 0.50, 0.25, 0.40, 0.30, 0.20)


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float
    end: float


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize_word(word: str, workdir: Path) -> np.ndarray:
    """One word at 16 kHz mono float32, trimmed to where its waveform is audible."""
    import av

    path = workdir / "word.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), word], check=True, capture_output=True)
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = [r.to_ndarray().reshape(-1) for f in container.decode(audio=0) for r in resampler.resample(f)]
        chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
    samples = np.concatenate(chunks).astype(np.float32)
    audible = np.flatnonzero(np.abs(samples) > 0.01 * np.abs(samples).max())
    return samples[audible[0] : audible[-1] + 1]


def build_clip(sentence: str = SENTENCE, gaps: tuple[float, ...] = GAPS_SECONDS, lead: float = 0.5) -> tuple[np.ndarray, list[TimedWord]]:
    pieces: list[np.ndarray] = [np.zeros(int(lead * SAMPLE_RATE), dtype=np.float32)]
    truth: list[TimedWord] = []
    cursor = lead
    with tempfile.TemporaryDirectory() as tmp:
        for index, word in enumerate(sentence.split()):
            samples = synthesize_word(word, Path(tmp))
            truth.append(TimedWord(word, cursor, cursor + len(samples) / SAMPLE_RATE))
            cursor += len(samples) / SAMPLE_RATE
            gap = gaps[index % len(gaps)]
            pieces += [samples, np.zeros(int(round(gap * SAMPLE_RATE)), dtype=np.float32)]
            cursor += int(round(gap * SAMPLE_RATE)) / SAMPLE_RATE
    pieces.append(np.zeros(int(0.5 * SAMPLE_RATE), dtype=np.float32))
    return np.concatenate(pieces), truth


def boundary_errors(truth: list[TimedWord], words: list[dict]) -> list[float]:
    """Absolute start and end errors of the transcribed words matched in order to the true ones by their text."""
    import re

    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    errors: list[float] = []
    position = 0
    for word in words:
        token = norm(word["word"])
        for index in range(position, len(truth)):
            if norm(truth[index].word) == token:
                errors += [abs(word["start"] - truth[index].start), abs(word["end"] - truth[index].end)]
                position = index + 1
                break
    return errors

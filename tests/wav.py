"""16-bit mono WAV from float samples (as files or bytes), and the 5-minute recording both services' batching
tests send."""
from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from tests.support import fixture_path

SAMPLE_RATE = 16_000
MEETING_PARTS = ("sample.wav", "dev00.wav", "dev01.wav", "jfk.flac")
MEETING_REPEATS = 3
"""jfk.flac is in the meeting recording this many times."""


def _write(target: Path | io.BytesIO, samples: np.ndarray, rate: int) -> None:
    with wave.open(target if isinstance(target, io.BytesIO) else str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def write_wav(samples: np.ndarray, path: Path, rate: int = SAMPLE_RATE) -> Path:
    _write(path, samples, rate)
    return path


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    buffer = io.BytesIO()
    _write(buffer, samples, rate)
    return buffer.getvalue()


def meeting_recording(folder: Path) -> Path:
    """About 5 minutes: sample, dev00, dev01 and jfk, MEETING_REPEATS times, with 0.7 s pauses (several windows)."""
    from whisper_common.uploads import decode_audio

    pause = np.zeros(int(0.7 * SAMPLE_RATE), dtype=np.float32)
    parts = [decode_audio(str(fixture_path(name))).samples for name in MEETING_PARTS]
    samples = np.concatenate([piece for _ in range(MEETING_REPEATS) for part in parts for piece in (part, pause)])
    return write_wav(samples, folder / "meeting.wav")

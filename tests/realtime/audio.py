"""Audio for the realtime tests: real recordings as the protocol's PCM16 at 24 kHz, and synthetic speech-like bursts
for the state-machine tests (whose VAD is a loudness threshold, so they need no model)."""
from __future__ import annotations

import base64

import numpy as np
from faster_whisper.audio import decode_audio

from tests.support import fixture_path

RATE = 24_000


def recording_pcm16(name: str, trailing_silence: float = 1.5) -> bytes:
    """A fixture as PCM16 LE mono at 24 kHz, with silence after it so the last utterance ends."""
    samples = decode_audio(str(fixture_path(name)), sampling_rate=RATE)
    samples = np.concatenate([samples, np.zeros(int(trailing_silence * RATE), dtype=np.float32)])
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def chunks(samples: np.ndarray, seconds: float = 0.1) -> list[str]:
    """Base64 PCM16 appends of `seconds` each."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    size = int(seconds * RATE) * 2
    return [base64.b64encode(pcm[i:i + size]).decode() for i in range(0, len(pcm), size)]


class LoudnessVad:
    """A stand-in for Silero in the sans-io tests: probability 1 for a 512-sample window with RMS above 0.05."""

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = 0

    def __call__(self, samples: np.ndarray) -> list[tuple[int, float]]:
        audio = np.concatenate([self._pending, samples])
        whole = len(audio) // 512 * 512
        self._pending = audio[whole:]
        out = []
        for start in range(0, whole, 512):
            window = audio[start:start + 512]
            self._position += 512
            out.append((self._position, 1.0 if float(np.sqrt(np.mean(window**2))) > 0.05 else 0.0))
        return out

"""Voice activity for turn detection: speech probabilities per 32 ms window (Silero, the model faster-whisper ships,
run as a stream that keeps its state between chunks) and `TurnDetector`, which turns them into speech start / stop
with OpenAI's server-VAD parameters (threshold, prefix_padding_ms, silence_duration_ms)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

VAD_RATE = 16_000
WINDOW = 512
"""Samples per probability (32 ms at 16 kHz)."""
_CONTEXT = 64

SpeechProbabilities = Callable[[np.ndarray], list[tuple[int, float]]]
"""Fed 16 kHz samples as they come; returns (absolute end sample, probability) for every window completed."""


class SileroStream:
    """Silero VAD over a stream: the same probabilities as faster-whisper's whole-file call, one window at a time."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model  # loads the ONNX model once per process (cached)

        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = 0

    def __call__(self, samples: np.ndarray) -> list[tuple[int, float]]:
        audio = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        whole = len(audio) // WINDOW * WINDOW
        self._pending = audio[whole:]
        if whole == 0:
            return []
        windows = audio[:whole].reshape(-1, WINDOW)
        contexts = np.concatenate([self._context[None, :], windows[:-1, -_CONTEXT:]], axis=0)
        batch = np.concatenate([contexts, windows], axis=1)
        output, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        self._context = windows[-1, -_CONTEXT:].copy()
        probabilities = np.asarray(output, dtype=np.float32).reshape(-1)
        ends = self._position + WINDOW * np.arange(1, len(windows) + 1)
        self._position += whole
        return [(int(end), float(p)) for end, p in zip(ends, probabilities, strict=True)]


@dataclass(frozen=True)
class TurnEvent:
    kind: str  # "start" | "stop"
    sample: int
    """start: the first voiced sample; stop: where the silence began (the end of the last voiced window)."""
    at: int
    """The window end at which it was decided."""


class TurnDetector:
    """Speech starts at the first window at or above `threshold`; it stops once windows below `threshold - 0.15`
    (Silero's hysteresis) have lasted `silence_duration_ms`. Windows in between keep the current state."""

    def __init__(self, threshold: float, silence_duration_ms: int) -> None:
        self.threshold = threshold
        self.negative_threshold = max(threshold - 0.15, 0.01)
        self.silence_samples = silence_duration_ms * VAD_RATE // 1000
        self.speaking = False
        self.silence_since: int | None = None

    def feed(self, end: int, probability: float) -> TurnEvent | None:
        start = end - WINDOW
        if not self.speaking:
            if probability >= self.threshold:
                self.speaking = True
                self.silence_since = None
                return TurnEvent("start", start, end)
            return None
        if probability >= self.threshold:
            self.silence_since = None
        elif probability < self.negative_threshold and self.silence_since is None:
            self.silence_since = start
        if self.silence_since is not None and end - self.silence_since >= self.silence_samples:
            stopped_at = self.silence_since
            self.reset()
            return TurnEvent("stop", stopped_at, end)
        return None

    def reset(self) -> None:
        self.speaking = False
        self.silence_since = None

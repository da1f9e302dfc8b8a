"""The protocol's audio (PCM16 mono at 24 kHz) to what Whisper and the VAD take (float32 at 16 kHz), as a stream:
libswresample (through PyAV) keeps its filter state between chunks, so chunk edges leave no clicks."""
from __future__ import annotations

import av
import numpy as np

from whisper_faster.realtime.events import SAMPLE_RATE
from whisper_faster.realtime.vad import VAD_RATE


class Resampler:
    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=VAD_RATE)

    def __call__(self, pcm16: np.ndarray) -> np.ndarray:
        if pcm16.size == 0:
            return np.zeros(0, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm16, dtype=np.int16).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = SAMPLE_RATE
        chunks = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, dtype=np.float32)

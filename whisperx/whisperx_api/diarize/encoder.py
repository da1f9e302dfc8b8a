"""resemblyzer's VoiceEncoder (a d-vector LSTM shipped inside the PyPI package), shared by the embedded diarizer
and the known-speaker matcher: loaded once, used by one thread at a time."""
from __future__ import annotations

import threading

import numpy as np

SAMPLE_RATE = 16000


class SpeakerEncoder:
    def __init__(self, device: str = "cpu") -> None:
        from resemblyzer import VoiceEncoder

        self._encoder = VoiceEncoder(device, verbose=False)
        self._lock = threading.Lock()

    def windows(self, mels: np.ndarray, batch: int = 256) -> np.ndarray:
        """One unit-length d-vector per mel window (`mels`: windows × frames × 40). Large batches: torch's CPU
        LSTM ran 10x slower in batches of 32 (for ~50 MB less peak memory)."""
        import torch

        with self._lock, torch.inference_mode():
            return np.concatenate([
                self._encoder(torch.from_numpy(mels[i : i + batch]).to(self._encoder.device)).cpu().numpy()
                for i in range(0, len(mels), batch)
            ])

    def utterance(self, samples: np.ndarray) -> np.ndarray:
        """The unit-length d-vector of a whole utterance (resemblyzer's average over 1.6 s partials)."""
        from resemblyzer.audio import normalize_volume
        from resemblyzer.hparams import audio_norm_target_dBFS

        wav = normalize_volume(samples.astype(np.float32), audio_norm_target_dBFS, increase_only=True)
        with self._lock:
            return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float32)

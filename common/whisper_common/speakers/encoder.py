"""The speaker encoder both services use (whisperx: the embedded diarizer and known speakers; whisper-faster: live
sessions; both: the voiceprint library): resemblyzer's d-vector model (the weights ship inside its PyPI package), run
in numpy (`speaker_net`, `mel`) so neither torch nor librosa is imported; loaded once, used by one thread at a time.

`model_id` names the weights (`resemblyzer-ge2e-256:<first 12 hex digits of their SHA-256>`): every stored voiceprint
records it, so that embeddings of another model are never compared with this one's.

Its matrix products run on one BLAS thread: OpenBLAS's own threads spin while they wait, and on a busy machine
(another request decoding, a live session) they made 60 s of windows take 11-14 CPU seconds and 25-58 s of wall time
against 2 CPU seconds and 7-10 s on one thread (measured on the 2-core test machine under load, docs/benchmarks.md).

`utterance` follows resemblyzer's `VoiceEncoder.embed_utterance` (volume raised to -30 dBFS, 1.6 s partials at
1.3 per second, the last kept when it is at least 75 % covered, their mean L2-normalised).
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from whisper_common.speakers.mel import HOP, mel_spectrogram
from whisper_common.speakers.speaker_net import SpeakerNet, resemblyzer_weights_path

T = TypeVar("T")

SAMPLE_RATE = 16000
TARGET_DBFS = -30.0
PARTIAL_FRAMES = 160  # 1.6 s
PARTIALS_PER_SECOND = 1.3
MIN_LAST_COVERAGE = 0.75
BATCH = 128  # windows per pass: the LSTM keeps time × batch × 256 floats per layer (~20 MB at 128)


def volume_gain(samples: np.ndarray, target_dbfs: float = TARGET_DBFS) -> float:
    """The factor that raises quiet audio to `target_dbfs` (mean power); 1 for louder audio. The power is summed a
    block at a time in float64, so an hour of audio needs no float64 copy of itself."""
    block = 1 << 20
    energy = sum(float(np.dot(part, part)) for part in (
        np.asarray(samples[i : i + block], dtype=np.float64) for i in range(0, len(samples), block)
    ))
    power = energy / len(samples) if len(samples) else 0.0
    if power <= 0.0:
        return 1.0
    change_db = target_dbfs - 10 * np.log10(power)
    return 1.0 if change_db < 0 else float(10 ** (change_db / 20))


def normalize_volume(samples: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raises quiet audio to `target_dbfs` (mean power); louder audio is left as it is."""
    samples = np.asarray(samples, dtype=np.float32)
    gain = volume_gain(samples, target_dbfs)
    return samples if gain == 1.0 else samples * np.float32(gain)


def partial_starts(n_samples: int) -> list[int]:
    """First mel frame of each 1.6 s partial covering an utterance of `n_samples` (always at least one)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    frame_step = int(np.round(SAMPLE_RATE / PARTIALS_PER_SECOND / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + frame_step + 1), frame_step))
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_LAST_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def weights_id(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return f"resemblyzer-ge2e-256:{digest.hexdigest()[:12]}"


class SpeakerEncoder:
    def __init__(self, weights_path: Path | None = None) -> None:
        path = weights_path or resemblyzer_weights_path()
        self._net = SpeakerNet(path)  # numpy, on the CPU whatever the service's device (the network is small)
        self.model_id = weights_id(path)
        self.dimensions = int(self._net.linear_bias.shape[0])
        self._lock = threading.Lock()
        self._blas = _one_blas_thread()

    def _run(self, work: Callable[[], T]) -> T:
        with self._lock, self._blas():
            return work()

    @staticmethod
    def mel(samples: np.ndarray) -> np.ndarray:
        """The encoder's input features of a stretch of audio, its volume normalised first (frames × 40). A gain g
        scales the power spectrogram by g², so the spectrogram is scaled instead of a copy of the audio."""
        mel = mel_spectrogram(np.asarray(samples, dtype=np.float32))
        gain = volume_gain(samples)
        if gain != 1.0:
            mel *= np.float32(gain * gain)
        return mel

    def windows(self, mels: np.ndarray) -> np.ndarray:
        """One unit-length d-vector per mel window (`mels`: windows × frames × 40)."""
        return self._run(lambda: np.concatenate([self._net(mels[i : i + BATCH]) for i in range(0, len(mels), BATCH)]))

    def windows_at(self, mel: np.ndarray, starts: np.ndarray, frames: int) -> np.ndarray:
        """One unit-length d-vector per window `mel[start : start + frames]`, the windows stacked a batch at a time
        (a long recording's windows, stacked at once, would take 24 kB each)."""
        return self._run(lambda: np.concatenate([
            self._net(np.stack([mel[start : start + frames] for start in starts[i : i + BATCH]]))
            for i in range(0, len(starts), BATCH)
        ]))

    def utterance(self, samples: np.ndarray) -> np.ndarray:
        """The unit-length d-vector of a whole utterance: the normalised mean of its partials' d-vectors."""
        samples = normalize_volume(samples)
        starts = partial_starts(len(samples))
        needed = (starts[-1] + PARTIAL_FRAMES) * HOP
        if needed >= len(samples):
            samples = np.pad(samples, (0, needed - len(samples)))
        mel = mel_spectrogram(samples)
        partials = self.windows(np.stack([mel[start : start + PARTIAL_FRAMES] for start in starts]))
        mean = partials.mean(axis=0)
        return (mean / np.linalg.norm(mean)).astype(np.float32)


def _one_blas_thread() -> Callable[[], object]:
    """A context manager factory that holds the BLAS libraries numpy loaded to one thread while it is entered."""
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    return lambda: controller.limit(limits=1, user_api="blas")

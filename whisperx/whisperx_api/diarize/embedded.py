"""The embedded diarizer: works on a fresh machine, from models that ship inside PyPI packages.

Speech regions come from the Silero VAD bundled with faster-whisper, speaker embeddings (d-vectors) from
resemblyzer's VoiceEncoder on sliding windows over the concatenated speech, and the windows are clustered by
spectral clustering (clustering.py, numpy/scipy) on their cosine affinity. Without a fixed count, the count is
estimated there (eigengap for one voice or several, silhouette for how many), bounded by min/max_speakers and by how
much speech there is (a voice needs `min_speaker_seconds` of speech to be told apart). Labels are SPEAKER_00,
SPEAKER_01, ... by first appearance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisperx_api.diarize.base import SpeakerBounds, SpeakerTurn, relabel_by_first_appearance
from whisperx_api.diarize.clustering import cluster_speakers
from whisperx_api.diarize.encoder import SpeakerEncoder

SAMPLE_RATE = 16000
FRAME_SECONDS = 0.01


@dataclass(frozen=True)
class EmbeddedDiarizerOptions:
    window_seconds: float = 1.5
    step_seconds: float = 0.25
    vad_threshold: float = 0.3
    min_silence_ms: int = 250
    speech_pad_ms: int = 60
    min_speaker_seconds: float = 5.0
    max_speakers_default: int = 8
    min_turn_seconds: float = 0.3
    max_windows: int = 600


class EmbeddedDiarizer:
    method = "embedded"

    def __init__(self, options: EmbeddedDiarizerOptions | None = None, encoder: SpeakerEncoder | None = None) -> None:
        self.options = options or EmbeddedDiarizerOptions()
        self.encoder = encoder or SpeakerEncoder()
        self.window_frames = max(1, round(self.options.window_seconds / FRAME_SECONDS))

    def __call__(self, audio: np.ndarray, bounds: SpeakerBounds) -> list[SpeakerTurn]:
        regions = self.speech_regions(audio)
        if not regions:
            return []
        speech, offsets = _concatenate(audio, regions)
        starts, embeddings = self._window_embeddings(speech)
        labels = self._cluster(embeddings, starts, bounds, len(speech) / SAMPLE_RATE)
        frame_labels = self._frame_labels(len(speech), starts, labels)
        turns = _turns_from_frames(frame_labels, offsets, regions)
        return relabel_by_first_appearance(_absorb_short_turns(turns, self.options.min_turn_seconds))

    def speech_regions(self, audio: np.ndarray) -> list[tuple[int, int]]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        options = VadOptions(
            threshold=self.options.vad_threshold,
            min_silence_duration_ms=self.options.min_silence_ms,
            speech_pad_ms=self.options.speech_pad_ms,
            min_speech_duration_ms=100,
        )
        return [(chunk["start"], chunk["end"]) for chunk in get_speech_timestamps(audio, options)]

    def _window_embeddings(self, speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mel = self.encoder.mel(speech)
        window = self.window_frames
        # Clustering is quadratic in memory and cubic in time in the window count: long recordings get a wider hop.
        step = max(1, round(self.options.step_seconds / FRAME_SECONDS), -(-len(mel) // self.options.max_windows))
        if len(mel) <= window:
            starts = np.array([0])
            batch = mel[None, :, :]
        else:
            starts = np.arange(0, len(mel) - window + 1, step)
            if starts[-1] + window < len(mel):
                starts = np.append(starts, len(mel) - window)
            batch = np.stack([mel[s : s + window] for s in starts])
        return starts, self.encoder.windows(batch)

    def _cluster(
        self, embeddings: np.ndarray, starts: np.ndarray, bounds: SpeakerBounds, speech_seconds: float
    ) -> np.ndarray:
        shared = np.abs(starts[:, None] - starts[None, :]) < self.window_frames
        if bounds.min_speakers is not None and bounds.min_speakers == bounds.max_speakers:
            return cluster_speakers(embeddings, bounds.min_speakers, bounds.min_speakers, shared)
        # A voice needs a few seconds of speech before its d-vectors form a cluster of their own.
        supported = max(1, int(speech_seconds // self.options.min_speaker_seconds))
        highest = bounds.max_speakers or min(self.options.max_speakers_default, supported)
        lowest = max(bounds.min_speakers or 1, 1)
        return cluster_speakers(embeddings, lowest, min(highest, len(embeddings)), shared)

    def _frame_labels(self, n_samples: int, starts: np.ndarray, labels: np.ndarray) -> np.ndarray:
        window = self.window_frames
        n_frames = int(np.ceil(n_samples / (SAMPLE_RATE * FRAME_SECONDS)))
        centres = starts + window / 2
        frames = np.arange(n_frames) + 0.5
        right = np.clip(np.searchsorted(centres, frames), 1, max(1, len(centres) - 1))
        left = right - 1
        if len(centres) == 1:
            return np.full(n_frames, labels[0])
        nearest = np.where(np.abs(frames - centres[left]) <= np.abs(centres[right] - frames), left, right)
        return labels[nearest]


def _concatenate(audio: np.ndarray, regions: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Speech-only audio and, per region, where it starts inside that concatenation (in samples)."""
    lengths = np.array([end - start for start, end in regions])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.concatenate([audio[start:end] for start, end in regions]).astype(np.float32), offsets


def _turns_from_frames(
    frame_labels: np.ndarray, offsets: np.ndarray, regions: list[tuple[int, int]]
) -> list[tuple[float, float, int]]:
    samples_per_frame = SAMPLE_RATE * FRAME_SECONDS
    turns: list[tuple[float, float, int]] = []
    for (start, end), offset in zip(regions, offsets):
        first = int(offset / samples_per_frame)
        last = max(first + 1, int(np.ceil((offset + end - start) / samples_per_frame)))
        region_labels = frame_labels[first:last]
        change = np.flatnonzero(np.diff(region_labels)) + 1
        bounds = np.concatenate([[0], change, [len(region_labels)]])
        for a, b in zip(bounds[:-1], bounds[1:]):
            turn_start = (start + a * samples_per_frame) / SAMPLE_RATE
            turn_end = min(end, start + b * samples_per_frame) / SAMPLE_RATE
            if turn_end > turn_start:
                turns.append((turn_start, turn_end, int(region_labels[a])))
    return turns


def _absorb_short_turns(turns: list[tuple[float, float, int]], shortest: float) -> list[tuple[float, float, int]]:
    """A turn shorter than `shortest` that touches a neighbour takes the neighbour's speaker, then merges."""
    labelled = [list(turn) for turn in turns]
    for i, turn in enumerate(labelled):
        if turn[1] - turn[0] >= shortest:
            continue
        before = labelled[i - 1] if i > 0 and abs(labelled[i - 1][1] - turn[0]) < 1e-6 else None
        after = labelled[i + 1] if i + 1 < len(labelled) and abs(labelled[i + 1][0] - turn[1]) < 1e-6 else None
        neighbour = max((n for n in (before, after) if n is not None), key=lambda n: n[1] - n[0], default=None)
        if neighbour is not None:
            turn[2] = neighbour[2]
    merged: list[list] = []
    for turn in labelled:
        if merged and merged[-1][2] == turn[2] and turn[0] - merged[-1][1] < 1e-6:
            merged[-1][1] = turn[1]
        else:
            merged.append(turn)
    return [(start, end, label) for start, end, label in merged]

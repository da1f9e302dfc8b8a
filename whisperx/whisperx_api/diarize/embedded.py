"""The embedded diarizer: works on a fresh machine, from models that ship inside PyPI packages.

Speech regions come from the Silero VAD bundled with faster-whisper, speaker embeddings (d-vectors) from
resemblyzer's VoiceEncoder on sliding windows over the concatenated speech. Then, by how much speech there is:

- up to `long_speech_seconds` (clips): spectral clustering of the windows (clustering.py): the count by the
  eigengap (one voice or several) and the silhouette (how many), bounded by min/max_speakers and by how much speech
  there is (a voice needs `min_speaker_seconds` of speech to be told apart). Tuned on 30 s clips.
- beyond (meetings, hours): segment embeddings clustered by average linkage with a calibrated threshold
  (agglomerative.py), in chunks linked across for hours of audio, then a Viterbi pass places the turns. The
  spectral count collapses there: its silhouette prefers the coarsest split of many voices, two or three groups.

Windows hop by `step_seconds`, wider on long recordings so that at most `max_windows` are embedded (never wider than
half a window, so every moment is in two windows): time and memory grow linearly with the speech, the clustering's
quadratic part is bounded by the chunk size. One speaker per moment: overlapped speech takes the dominant voice.
Labels are SPEAKER_00, SPEAKER_01, ... by first appearance.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from whisper_common.speakers.encoder import SpeakerEncoder

from whisperx_api.diarize.agglomerative import LinkageOptions, cluster_windows, segment_ids
from whisperx_api.diarize.base import SpeakerBounds, SpeakerTurn, relabel_by_first_appearance
from whisperx_api.diarize.clustering import cluster_speakers

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
    # Room above the 10 voices a meeting may have: a recording with more clusters than this is cut to this many
    # below the calibrated threshold, which merges voices badly (bench/long_der.py's dev set, at 8: its 8-voice
    # recording came back with 7 speakers and 86 % of windows right instead of 8 and 97 %). 10, 12 and 16 scored alike.
    max_speakers_default: int = 12
    min_turn_seconds: float = 0.3
    max_windows: int = 1200
    long_speech_seconds: float = 120.0
    vad_block_seconds: float = 120.0
    linkage: LinkageOptions = LinkageOptions()


class EmbeddedDiarizer:
    method = "embedded"

    def __init__(self, options: EmbeddedDiarizerOptions | None = None, encoder: SpeakerEncoder | None = None) -> None:
        self.options = options or EmbeddedDiarizerOptions()
        self.encoder = encoder or SpeakerEncoder()
        self.window_frames = max(1, round(self.options.window_seconds / FRAME_SECONDS))

    def __call__(self, audio: np.ndarray, bounds: SpeakerBounds) -> list[SpeakerTurn]:
        """Who spoke when: the diarizer's own turns (start, end, speaker), independent of any transcript."""
        regions = self.speech_regions(audio)
        if not regions:
            return []
        speech, offsets = _concatenate(audio, regions)
        starts, embeddings = self._window_embeddings(speech)
        speech_seconds = len(speech) / SAMPLE_RATE
        if speech_seconds <= self.options.long_speech_seconds:
            labels = self._cluster(embeddings, starts, bounds, speech_seconds)
        else:
            labels = self._link(embeddings, starts, offsets, bounds)
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
        # faster-whisper's VAD holds about four times its input at its peak: a long recording goes through in
        # blocks, and a region cut by a block's end is joined to its continuation.
        block = int(self.options.vad_block_seconds * SAMPLE_RATE)
        regions: list[tuple[int, int]] = []
        for offset in range(0, len(audio), block):
            for chunk in get_speech_timestamps(audio[offset : offset + block], options):
                start, end = offset + chunk["start"], offset + chunk["end"]
                if regions and start - regions[-1][1] < options.min_silence_duration_ms * SAMPLE_RATE // 1000 and (
                    start - offset < options.speech_pad_ms * SAMPLE_RATE // 1000 + 1
                ):
                    regions[-1] = (regions[-1][0], max(end, regions[-1][1]))
                else:
                    regions.append((start, end))
        return regions

    def _window_embeddings(self, speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mel = self.encoder.mel(speech)
        window = self.window_frames
        if len(mel) <= window:
            return np.array([0]), self.encoder.windows(mel[None, :, :])
        starts = np.arange(0, len(mel) - window + 1, self._hop_frames(len(mel)))
        if starts[-1] + window < len(mel):
            starts = np.append(starts, len(mel) - window)
        return starts, self.encoder.windows_at(mel, starts, window)

    def _hop_frames(self, frames: int) -> int:
        """`step_seconds`, or wider so that at most `max_windows` are embedded, but at most half a window."""
        step = max(1, round(self.options.step_seconds / FRAME_SECONDS))
        return max(step, min(-(-frames // self.options.max_windows), self.window_frames // 2))

    def _link(
        self, embeddings: np.ndarray, starts: np.ndarray, offsets: np.ndarray, bounds: SpeakerBounds
    ) -> np.ndarray:
        linkage = replace(self.options.linkage, min_speaker_seconds=self.options.min_speaker_seconds)
        centres = starts + self.window_frames / 2
        region_starts = offsets / (SAMPLE_RATE * FRAME_SECONDS)
        segments = segment_ids(centres, region_starts, linkage.segment_seconds / FRAME_SECONDS)
        hop_seconds = float(np.median(np.diff(starts))) * FRAME_SECONDS if len(starts) > 1 else 0.0
        lowest = max(bounds.min_speakers or 1, 1)
        highest = bounds.max_speakers or max(lowest, self.options.max_speakers_default)
        return cluster_windows(embeddings, segments, hop_seconds, lowest, highest, linkage)

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
    return np.concatenate([audio[start:end] for start, end in regions]).astype(np.float32, copy=False), offsets


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

"""Known speakers: diarized speakers named after reference clips (OpenAI's `known_speaker_names[]` /
`known_speaker_references[]`).

Works on the turns of any diarizer: each diarized speaker's speech (up to `MAX_SPEAKER_SECONDS`, longest turns
first) and each reference clip become resemblyzer d-vectors; speakers and references are paired one to one by
cosine similarity (Hungarian assignment), and a pair at or above the threshold gives the speaker the reference's
name. A speaker no reference matches keeps its label; a reference may match nobody.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from whisper_common.speakers.encoder import SAMPLE_RATE, SpeakerEncoder

from whisperx_api.diarize.base import SpeakerTurn

KNOWN_SPEAKER_THRESHOLD = 0.80
"""Default similarity threshold (resemblyzer d-vectors: on the AMI and telephone fixtures the same voice scored 0.85-0.97 across recordings, other voices 0.44-0.77 and an espeak-ng voice at most 0.61)."""
MAX_KNOWN_SPEAKERS = 4
MIN_REFERENCE_SECONDS = 2.0
MAX_REFERENCE_SECONDS = 10.0
MAX_SPEAKER_SECONDS = 30.0


@dataclass(frozen=True, eq=False)
class KnownSpeaker:
    """A name and a 16 kHz mono reference clip of that voice (2-10 s)."""

    name: str
    samples: np.ndarray


class SpeakerMatcher:
    def __init__(self, encoder: SpeakerEncoder, threshold: float = KNOWN_SPEAKER_THRESHOLD) -> None:
        self.encoder = encoder
        self.threshold = threshold

    def similarities(
        self, audio: np.ndarray, turns: list[SpeakerTurn], known: tuple[KnownSpeaker, ...]
    ) -> tuple[list[str], np.ndarray]:
        """The diarized labels (first appearance order) and their cosine similarity to each reference."""
        labels = list(dict.fromkeys(turn.speaker for turn in turns))
        speakers = np.stack([self.encoder.utterance(speech_of(audio, turns, label)) for label in labels])
        references = np.stack([self.encoder.utterance(reference.samples) for reference in known])
        return labels, speakers @ references.T

    def name_speakers(
        self, audio: np.ndarray, turns: list[SpeakerTurn], known: tuple[KnownSpeaker, ...]
    ) -> list[SpeakerTurn]:
        if not turns or not known:
            return turns
        from scipy.optimize import linear_sum_assignment

        labels, similarity = self.similarities(audio, turns, known)
        similarity = np.nan_to_num(similarity, nan=-1.0)  # a voiceless turn or clip matches nobody
        rows, columns = linear_sum_assignment(-similarity)
        names = {
            labels[row]: known[column].name
            for row, column in zip(rows, columns)
            if similarity[row, column] >= self.threshold
        }
        return [replace(turn, speaker=names.get(turn.speaker, turn.speaker)) for turn in turns]


def speech_of(audio: np.ndarray, turns: list[SpeakerTurn], label: str) -> np.ndarray:
    """A speaker's speech: their longest turns first, up to MAX_SPEAKER_SECONDS."""
    own = sorted((turn for turn in turns if turn.speaker == label), key=lambda turn: turn.start - turn.end)
    pieces: list[np.ndarray] = []
    total = 0
    for turn in own:
        piece = audio[int(turn.start * SAMPLE_RATE) : int(turn.end * SAMPLE_RATE)]
        pieces.append(piece[: int(MAX_SPEAKER_SECONDS * SAMPLE_RATE) - total])
        total += len(pieces[-1])
        if total >= MAX_SPEAKER_SECONDS * SAMPLE_RATE:
            break
    return np.concatenate(pieces) if pieces else np.zeros(SAMPLE_RATE, dtype=np.float32)

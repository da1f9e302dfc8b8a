"""What every diarizer returns: speaker turns labelled SPEAKER_00.. in order of first appearance."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from whisper_common.openai_formats import to_rttm
from whisper_common.transcript import Transcript, Turn


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class SpeakerBounds:
    min_speakers: int | None = None
    max_speakers: int | None = None


class Diarizer(Protocol):
    method: str

    def __call__(self, audio: np.ndarray, bounds: SpeakerBounds) -> list[SpeakerTurn]: ...


def relabel_by_first_appearance(turns: list[tuple[float, float, object]]) -> list[SpeakerTurn]:
    """Rename arbitrary cluster ids to SPEAKER_00, SPEAKER_01, … in the order speakers first speak."""
    ordered = sorted(turns, key=lambda turn: (turn[0], turn[1]))
    names: dict[object, str] = {}
    for _, _, label in ordered:
        names.setdefault(label, f"SPEAKER_{len(names):02d}")
    return [SpeakerTurn(round(start, 3), round(end, 3), names[label]) for start, end, label in ordered]


def rttm(turns: list[SpeakerTurn], file_id: str = "audio") -> str:
    """The turns as RTTM, one `SPEAKER <file-id> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>` line each (the
    format the NIST scoring tools and pyannote.metrics read; whisper_common.openai_formats.to_rttm, which renders
    `response_format=rttm`)."""
    transcript = Transcript(language="", duration=0.0, turns=[Turn(t.start, t.end, t.speaker) for t in turns])
    return to_rttm(transcript, file_id)

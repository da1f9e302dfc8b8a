"""What every diarizer returns: speaker turns labelled SPEAKER_00.. in order of first appearance."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


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
    format the NIST scoring tools and pyannote.metrics read); spaces in the id or a label become underscores."""
    file_id = "_".join(file_id.split()) or "audio"
    return "".join(
        f"SPEAKER {file_id} 1 {turn.start:.3f} {turn.end - turn.start:.3f} <NA> <NA> {'_'.join(turn.speaker.split())} "
        "<NA> <NA>\n"
        for turn in turns
    )

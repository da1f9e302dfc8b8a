"""Diarization error rate (pyannote.metrics, collar 0.25 s) of speaker turns against the fixtures' reference RTTMs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support import fixture_path

COLLAR = 0.25
RTTM_OF = {"sample": "sample.rttm", "dev00": "debug.development.rttm", "dev01": "debug.development.rttm"}


@dataclass(frozen=True)
class DerResult:
    file_id: str
    der: float
    missed: float
    false_alarm: float
    confusion: float
    speakers: int
    reference_speakers: int

    def line(self) -> str:
        return (
            f"{self.file_id}: DER {self.der:.1%} (missed {self.missed:.1%}, false alarm {self.false_alarm:.1%}, "
            f"confusion {self.confusion:.1%}), speakers {self.speakers} / reference {self.reference_speakers}"
        )


def reference(file_id: str):  # -> pyannote.core.Annotation
    from pyannote.database.util import load_rttm

    return load_rttm(str(fixture_path(RTTM_OF[file_id])))[file_id]


def audio_path(file_id: str) -> Path:
    return fixture_path(f"{file_id}.wav")


def der_of(file_id: str, turns: list[tuple[float, float, str]]) -> DerResult:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    hypothesis = Annotation(uri=file_id)
    for start, end, speaker in turns:
        hypothesis[Segment(start, end)] = speaker
    truth = reference(file_id)
    details = DiarizationErrorRate(collar=COLLAR)(truth, hypothesis, detailed=True)
    total = details["total"] or 1.0
    return DerResult(
        file_id=file_id,
        der=details["diarization error rate"],
        missed=details["missed detection"] / total,
        false_alarm=details["false alarm"] / total,
        confusion=details["confusion"] / total,
        speakers=len(hypothesis.labels()),
        reference_speakers=len(truth.labels()),
    )

"""The diarizer's own turns as data: RTTM that pyannote reads back unchanged."""
from __future__ import annotations

from pathlib import Path

from whisperx_api.diarize.base import SpeakerTurn, rttm


def test_rttm_round_trips_through_pyannote(tmp_path: Path) -> None:
    from pyannote.database.util import load_rttm

    turns = [SpeakerTurn(0.5, 2.25, "SPEAKER_00"), SpeakerTurn(2.4, 3.0, "Ada Lovelace"), SpeakerTurn(3.0, 7.125, "SPEAKER_00")]
    path = tmp_path / "turns.rttm"
    path.write_text(rttm(turns, "my meeting"))
    annotation = load_rttm(str(path))["my_meeting"]
    read = sorted((segment.start, segment.end, label) for segment, _, label in annotation.itertracks(yield_label=True))
    assert read == [(0.5, 2.25, "SPEAKER_00"), (2.4, 3.0, "Ada_Lovelace"), (3.0, 7.125, "SPEAKER_00")]
    assert rttm([], "x") == ""

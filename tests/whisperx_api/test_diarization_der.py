"""The embedded diarizer against reference RTTMs: DER (collar 0.25 s) and the speaker count, figures printed.

sample.wav is the two-speaker sample shipped inside pyannote.audio (pyannote/audio/sample/, byte-identical to the
fixture); dev00/dev01 are far-field AMI meeting excerpts."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.support import require
from tests.whisperx_api.der import audio_path, der_of

TARGETS = {"sample": 0.25, "dev00": 0.45, "dev01": 0.45}


@pytest.fixture(scope="module")
def diarizer():
    require(importlib.util.find_spec("resemblyzer") is not None, "resemblyzer")
    from whisperx_api.diarize.embedded import EmbeddedDiarizer

    return EmbeddedDiarizer()


def _audio(file_id: str) -> np.ndarray:
    from whisper_common.uploads import decode_audio

    return decode_audio(str(audio_path(file_id))).samples


@pytest.mark.parametrize("file_id", list(TARGETS))
def test_embedded_der(diarizer, file_id: str) -> None:
    from whisperx_api.diarize.base import SpeakerBounds

    turns = diarizer(_audio(file_id), SpeakerBounds())
    result = der_of(file_id, [(turn.start, turn.end, turn.speaker) for turn in turns])
    print("\n" + result.line())
    assert result.der <= TARGETS[file_id]
    if file_id == "sample":
        assert result.speakers == result.reference_speakers
    labels = [turn.speaker for turn in turns]
    assert labels[0] == "SPEAKER_00"
    first_seen = list(dict.fromkeys(labels))
    assert first_seen == [f"SPEAKER_{index:02d}" for index in range(len(first_seen))]


def test_fixed_count_is_honoured(diarizer) -> None:
    from whisperx_api.diarize.base import SpeakerBounds

    for count in (1, 2, 3):
        turns = diarizer(_audio("dev00"), SpeakerBounds(count, count))
        assert len({turn.speaker for turn in turns}) == count

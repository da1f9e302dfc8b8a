"""The pipeline's pure steps: speaker assignment (whisperx.assign_word_speakers), segment splitting, validation."""
from __future__ import annotations

import pytest

from pydantic import ValidationError

from whisper_common.errors import InvalidParameter
from whisper_common.options import checked_language
from whisperx_api.diarize.base import SpeakerTurn, relabel_by_first_appearance
from whisperx_api.options import WhisperXOptions
from whisperx_api.pipeline import assign_speakers, split_segments


def _words(*spec: tuple[str, float, float]) -> list[dict]:
    return [{"word": word, "start": start, "end": end, "score": 0.9} for word, start, end in spec]


def test_words_take_the_overlapping_speaker_and_segments_split_at_changes() -> None:
    segments = [{
        "start": 0.0, "end": 4.0, "text": " hello there. yes indeed",
        "words": _words(("hello", 0.0, 0.4), ("there.", 0.5, 0.9), ("yes", 2.0, 2.3), ("indeed", 2.4, 3.0)),
    }]
    turns = [SpeakerTurn(0.0, 1.0, "SPEAKER_00"), SpeakerTurn(1.8, 3.2, "SPEAKER_01")]
    assign_speakers(turns, segments)
    assert [w["speaker"] for w in segments[0]["words"]] == ["SPEAKER_00", "SPEAKER_00", "SPEAKER_01", "SPEAKER_01"]
    split = split_segments(segments, "en", by_speaker=True)
    assert [(s["text"], s["speaker"], s["start"], s["end"]) for s in split] == [
        (" hello there.", "SPEAKER_00", 0.0, 0.9),
        (" yes indeed", "SPEAKER_01", 2.0, 3.0),
    ]


def test_word_outside_every_turn_takes_the_nearest_speaker() -> None:
    segments = [{"start": 5.0, "end": 5.5, "text": " late", "words": _words(("late", 5.0, 5.5))}]
    assign_speakers([SpeakerTurn(0.0, 1.0, "SPEAKER_00"), SpeakerTurn(3.0, 4.0, "SPEAKER_01")], segments)
    assert segments[0]["words"][0]["speaker"] == "SPEAKER_01"


def test_split_at_sentence_ends_and_long_pauses_without_speakers() -> None:
    segments = [{
        "start": 0.0, "end": 9.0, "text": "",
        "words": _words(("One.", 0.0, 0.5), ("two", 0.6, 1.0), ("three", 3.0, 3.5), ("four?", 3.6, 4.0)),
    }]
    split = split_segments(segments, "en", by_speaker=False)
    assert [s["text"] for s in split] == [" One.", " two", " three four?"]
    assert all(s["speaker"] is None for s in split)
    assert split_segments(segments, "ja", by_speaker=False)[2]["text"] == "threefour?"


def test_labels_follow_first_appearance() -> None:
    turns = relabel_by_first_appearance([(3.0, 4.0, 7), (0.0, 1.0, 2), (1.0, 2.0, 7), (5.0, 6.0, 0)])
    assert [(t.start, t.speaker) for t in turns] == [(0.0, "SPEAKER_00"), (1.0, "SPEAKER_01"), (3.0, "SPEAKER_01"), (5.0, "SPEAKER_02")]


def test_speaker_bounds_and_language_validation() -> None:
    assert WhisperXOptions(min_speakers=2, max_speakers=2).bounds.min_speakers == 2
    with pytest.raises(InvalidParameter) as bad_order:
        WhisperXOptions(min_speakers=3, max_speakers=2)
    assert bad_order.value.param == "min_speakers" and "max_speakers" in bad_order.value.message
    with pytest.raises(ValidationError):
        WhisperXOptions(max_speakers=0)
    assert checked_language(" ") is None and checked_language("fr") == "fr" and checked_language("German") == "de"
    with pytest.raises(InvalidParameter):
        checked_language("xx-klingon")

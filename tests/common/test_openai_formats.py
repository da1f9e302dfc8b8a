"""The OpenAI formatters on hand-built transcripts: exact strings and shapes."""
from __future__ import annotations

import json

import pytest

from whisper_common.errors import InvalidParameter
from whisper_common.openai_formats import (
    ResponseFormat,
    TimestampGranularity,
    delta_event,
    done_event,
    error_event,
    format_timestamp,
    parse_granularities,
    parse_response_format,
    render,
    render_body,
    segment_event,
    speaker_turns,
    to_diarized_json,
    to_json,
    to_srt,
    to_text,
    to_verbose_json,
    to_vtt,
)
from whisper_common.transcript import Segment, Transcript, Word

WORD = frozenset({TimestampGranularity.WORD})
BOTH = frozenset({TimestampGranularity.WORD, TimestampGranularity.SEGMENT})


def _transcript(speakers: bool = False) -> Transcript:
    return Transcript(
        language="en",
        duration=4.2,
        segments=[
            Segment(
                id=0, start=0.0, end=1.5, text=" Hello there.", seek=0, tokens=[1, 2], temperature=0.0,
                avg_logprob=-0.25, compression_ratio=1.1, no_speech_prob=0.01,
                words=[Word(" Hello", 0.0, 0.6, 0.9, "SPEAKER_00" if speakers else None), Word(" there.", 0.7, 1.5, 0.8)],
                speaker="SPEAKER_00" if speakers else None,
            ),
            Segment(
                id=1, start=1.5, end=3.0, text=" How are you?", seek=150, tokens=[3],
                words=[Word(" How", 1.5, 1.8, 0.7), Word(" are", 1.8, 2.0, 0.7), Word(" you?", 2.0, 3.0, 0.6)],
                speaker="SPEAKER_01" if speakers else None,
            ),
            Segment(id=2, start=3.0, end=4.5, text=" Fine --> thanks.", speaker="SPEAKER_01" if speakers else None),
        ],
    )


def test_json() -> None:
    assert to_json(_transcript()) == {
        "text": "Hello there. How are you? Fine --> thanks.",
        "usage": {"type": "duration", "seconds": 5},
    }


def test_text() -> None:
    assert to_text(_transcript()) == "Hello there. How are you? Fine --> thanks.\n"


def test_text_with_speakers_merges_turns() -> None:
    assert to_text(_transcript(speakers=True)) == "[SPEAKER_00] Hello there.\n[SPEAKER_01] How are you? Fine --> thanks.\n"
    assert speaker_turns(_transcript(speakers=True).segments)[1] == ("SPEAKER_01", "How are you? Fine --> thanks.")


def test_srt_exact() -> None:
    assert to_srt(_transcript()) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n00:00:01,500 --> 00:00:03,000\nHow are you?\n\n"
        "3\n00:00:03,000 --> 00:00:04,200\nFine -> thanks.\n"
    )


def test_vtt_exact_with_speakers() -> None:
    assert to_vtt(_transcript(speakers=True)) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.500\n[SPEAKER_00] Hello there.\n\n"
        "00:00:01.500 --> 00:00:03.000\n[SPEAKER_01] How are you?\n\n"
        "00:00:03.000 --> 00:00:04.200\n[SPEAKER_01] Fine -> thanks.\n"
    )


def test_srt_with_speakers() -> None:
    assert "1\n00:00:00,000 --> 00:00:01,500\n[SPEAKER_00] Hello there.\n" in to_srt(_transcript(speakers=True))


@pytest.mark.parametrize(
    ("seconds", "marker", "expected"),
    [(0, ",", "00:00:00,000"), (3661.2345, ".", "01:01:01.234"), (59.9996, ",", "00:01:00,000"), (-1, ".", "00:00:00.000")],
)
def test_timestamps(seconds: float, marker: str, expected: str) -> None:
    assert format_timestamp(seconds, marker) == expected


def test_verbose_json_segments_only_by_default() -> None:
    body = to_verbose_json(_transcript())
    assert list(body) == ["task", "language", "duration", "text", "segments"]
    assert body["language"] == "english" and body["task"] == "transcribe" and body["duration"] == 4.2
    assert body["segments"][0] == {
        "id": 0, "seek": 0, "start": 0.0, "end": 1.5, "text": " Hello there.", "tokens": [1, 2], "temperature": 0.0,
        "avg_logprob": -0.25, "compression_ratio": 1.1, "no_speech_prob": 0.01,
    }


def test_verbose_json_words_alone_and_both() -> None:
    words_only = to_verbose_json(_transcript(), WORD)
    assert "segments" not in words_only
    assert words_only["words"][:2] == [{"word": "Hello", "start": 0.0, "end": 0.6}, {"word": "there.", "start": 0.7, "end": 1.5}]
    both = to_verbose_json(_transcript(), BOTH)
    assert len(both["segments"]) == 3 and len(both["words"]) == 5


def test_verbose_json_carries_speakers_when_present() -> None:
    body = to_verbose_json(_transcript(speakers=True), BOTH)
    assert body["segments"][0]["speaker"] == "SPEAKER_00"
    assert body["words"][0]["speaker"] == "SPEAKER_00" and "speaker" not in body["words"][1]


def test_diarized_json() -> None:
    body = to_diarized_json(_transcript(speakers=True))
    assert body == {
        "task": "transcribe",
        "duration": 4.2,
        "text": "Hello there. How are you? Fine --> thanks.",
        "segments": [
            {"id": "seg_0", "start": 0.0, "end": 1.5, "speaker": "A", "text": "Hello there.", "type": "transcript.text.segment"},
            {"id": "seg_1", "start": 1.5, "end": 3.0, "speaker": "B", "text": "How are you?", "type": "transcript.text.segment"},
            {"id": "seg_2", "start": 3.0, "end": 4.5, "speaker": "B", "text": "Fine --> thanks.", "type": "transcript.text.segment"},
        ],
        "usage": {"type": "duration", "seconds": 5},
    }


def test_diarized_json_keeps_known_names_and_letters_the_rest() -> None:
    transcript = _transcript(speakers=True)
    transcript.segments[1].speaker = "A"  # a known speaker named "A": the diarizer's labels skip that letter
    transcript.segments[2].speaker = "SPEAKER_07"
    assert [s["speaker"] for s in to_diarized_json(transcript)["segments"]] == ["B", "A", "C"]


def test_sse_events() -> None:
    assert delta_event(" Hi") == 'data: {"type": "transcript.text.delta", "delta": " Hi"}\n\n'
    assert json.loads(done_event("Hi there")[len("data: "):]) == {"type": "transcript.text.done", "text": "Hi there"}
    segment = json.loads(segment_event(_transcript(speakers=True).segments[1], "B")[len("data: "):])
    assert segment["type"] == "transcript.text.segment" and segment["speaker"] == "B" and segment["id"] == "seg_1"
    assert error_event({"error": {"message": "x"}}).startswith("event: error\ndata: ")


def test_parse_response_format() -> None:
    assert parse_response_format(None) is ResponseFormat.JSON
    assert parse_response_format("vtt") is ResponseFormat.VTT
    with pytest.raises(InvalidParameter) as raised:
        parse_response_format("diarized_json")
    assert raised.value.param == "response_format"
    assert parse_response_format("diarized_json", allowed=list(ResponseFormat)) is ResponseFormat.DIARIZED_JSON


def test_parse_granularities() -> None:
    assert parse_granularities(["word", "segment"], ResponseFormat.VERBOSE_JSON) == BOTH
    assert parse_granularities(["word,segment"], ResponseFormat.VERBOSE_JSON) == BOTH
    assert parse_granularities([], ResponseFormat.JSON) == frozenset()
    for values, response_format in ((["word"], ResponseFormat.JSON), (["segment"], ResponseFormat.SRT), (["line"], ResponseFormat.VERBOSE_JSON)):
        with pytest.raises(InvalidParameter) as raised:
            parse_granularities(values, response_format)
        assert raised.value.param == "timestamp_granularities"


def test_render_media_types() -> None:
    transcript = _transcript()
    assert render(transcript, ResponseFormat.SRT).media_type.startswith("application/x-subrip")
    assert render(transcript, ResponseFormat.VTT).media_type.startswith("text/vtt")
    assert render(transcript, ResponseFormat.TEXT).media_type.startswith("text/plain")
    assert render(transcript, ResponseFormat.JSON).media_type == "application/json"
    assert render_body(Transcript(language="en", duration=0.0), ResponseFormat.JSON) == {
        "text": "", "usage": {"type": "duration", "seconds": 0}
    }

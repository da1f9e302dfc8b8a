"""OpenAI's transcription response formats and streaming events, rendered from a `Transcript`.

Typical route code:

    response_format = parse_response_format(form_value, allowed=TRANSCRIPTION_FORMATS)
    granularities = parse_granularities(form_values, response_format)   # 400 for word + non-verbose format
    return render(transcript, response_format, granularities)           # a Starlette Response

Shapes (exactly OpenAI's):
- json: `{"text", "usage": {"type": "duration", "seconds"}}` (seconds rounded up, as OpenAI bills them)
- text: the text and a newline; with speakers one `[SPEAKER_00] ...` line per speaker turn
- srt / vtt: subtitle files, one cue per segment, `[SPEAKER_00] ` before the text when a segment has a speaker
- verbose_json: `{"task", "language" (English name), "duration", "text", "segments"?, "words"?}`; segments unless only
  `["word"]` was asked for; words only when `"word"` was asked for
- diarized_json: `{"task": "transcribe", "duration", "text", "segments": [{"id", "start", "end", "speaker", "text",
  "type": "transcript.text.segment"}], "usage"}` as the SDK's `TranscriptionDiarized` types it: `id` a string
  (`seg_0`, ...), speakers `A`, `B`, ... by first appearance (a diarizer's `SPEAKER_00` labels are renamed; other
  labels, the known speakers' names, are kept)
- rttm (an extension, where diarization ran): the diarizer's turns, one `SPEAKER <file> 1 <start> <duration> <NA> <NA>
  <speaker> <NA> <NA>` line each, as NIST's tools and pyannote.metrics read them

Where a transcript carries the diarizer's turns, verbose_json has `turns`: `[{"start", "end", "speaker"}]` (and
`similarity` where a known voice named the turn), labelled like the segments: an extension, as the segments' `speaker`
is (OpenAI's verbose_json has no speakers). diarized_json stays exactly OpenAI's shape (the SDK's `TranscriptionDiarized`,
strictly validated), so it has no `turns`; rttm gives them in any case.

Streaming (`text/event-stream`, one `data: {json}` line per event): `delta_event(text)` for each decoded segment,
`segment_event(segment, speaker)` for diarized streams, then `done_event(full_text)` carrying the FULL text.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from whisper_common.errors import InvalidParameter
from whisper_common.languages import language_name
from whisper_common.transcript import Segment, Transcript, Turn, Word, join_segment_texts


class ResponseFormat(StrEnum):
    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VERBOSE_JSON = "verbose_json"
    VTT = "vtt"
    DIARIZED_JSON = "diarized_json"
    RTTM = "rttm"


class TimestampGranularity(StrEnum):
    SEGMENT = "segment"
    WORD = "word"


TRANSCRIPTION_FORMATS: tuple[ResponseFormat, ...] = (
    ResponseFormat.JSON, ResponseFormat.TEXT, ResponseFormat.SRT, ResponseFormat.VERBOSE_JSON, ResponseFormat.VTT,
)
"""What whisper-faster accepts; WhisperX adds DIARIZED_JSON."""

SSE_MEDIA_TYPE = "text/event-stream"
MEDIA_TYPES: dict[ResponseFormat, str] = {
    ResponseFormat.JSON: "application/json",
    ResponseFormat.VERBOSE_JSON: "application/json",
    ResponseFormat.DIARIZED_JSON: "application/json",
    ResponseFormat.TEXT: "text/plain; charset=utf-8",
    ResponseFormat.SRT: "application/x-subrip; charset=utf-8",
    ResponseFormat.VTT: "text/vtt; charset=utf-8",
    ResponseFormat.RTTM: "text/plain; charset=utf-8",
}


def parse_response_format(
    value: str | None, allowed: Sequence[ResponseFormat] = TRANSCRIPTION_FORMATS
) -> ResponseFormat:
    """The form value as a ResponseFormat (default json); a value outside `allowed` is a 400 naming it."""
    if value is None or value == "":
        return ResponseFormat.JSON
    try:
        parsed = ResponseFormat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed not in allowed:
        choices = ", ".join(f"'{item.value}'" for item in allowed)
        raise InvalidParameter("response_format", f"response_format '{value}' is not supported; use one of {choices}")
    return parsed


def parse_granularities(values: Iterable[str] | None, response_format: ResponseFormat) -> frozenset[TimestampGranularity]:
    """`timestamp_granularities[]` as a set. Empty means segments. Word timestamps need verbose_json (400 otherwise,
    as OpenAI answers); diarized_json also accepts them (words carry speakers)."""
    granularities: set[TimestampGranularity] = set()
    for value in values or ():
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            try:
                granularities.add(TimestampGranularity(item))
            except ValueError:
                raise InvalidParameter(
                    "timestamp_granularities", f"timestamp granularity '{item}' is not supported; use 'segment' or 'word'"
                ) from None
    if granularities and response_format not in (ResponseFormat.VERBOSE_JSON, ResponseFormat.DIARIZED_JSON):
        raise InvalidParameter(
            "timestamp_granularities",
            "timestamp_granularities requires response_format 'verbose_json'",
        )
    return frozenset(granularities)


def wants_words(granularities: frozenset[TimestampGranularity]) -> bool:
    return TimestampGranularity.WORD in granularities


def usage(duration: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(duration)}


def to_json(transcript: Transcript) -> dict[str, Any]:
    return {"text": transcript.text, "usage": usage(transcript.duration)}


def to_text(transcript: Transcript) -> str:
    if not transcript.has_speakers:
        return transcript.text + "\n"
    return "".join(f"{_speaker_prefix(speaker)}{text}\n" for speaker, text in speaker_turns(transcript.segments))


def speaker_turns(segments: Iterable[Segment]) -> list[tuple[str | None, str]]:
    """Consecutive segments of one speaker merged: `[(speaker, text), ...]`."""
    turns: list[tuple[str | None, list[str]]] = []
    for segment in segments:
        if turns and turns[-1][0] == segment.speaker:
            turns[-1][1].append(segment.text)
        else:
            turns.append((segment.speaker, [segment.text]))
    return [(speaker, join_segment_texts(texts)) for speaker, texts in turns]


def format_timestamp(seconds: float, decimal_marker: str) -> str:
    """`HH:MM:SS,mmm` (srt, marker ",") or `HH:MM:SS.mmm` (vtt, marker ".")."""
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"


def _cue_text(segment: Segment) -> str:
    return _speaker_prefix(segment.speaker) + segment.text.strip().replace("-->", "->")


def _speaker_prefix(speaker: str | None) -> str:
    return f"[{speaker}] " if speaker else ""


def _cue_times(transcript: Transcript, segment: Segment) -> tuple[float, float]:
    start = min(max(segment.start, 0.0), transcript.duration) if transcript.duration else max(segment.start, 0.0)
    end = min(max(segment.end, start), transcript.duration) if transcript.duration else max(segment.end, start)
    return start, end


def to_srt(transcript: Transcript) -> str:
    cues = []
    for number, segment in enumerate(transcript.segments, start=1):
        start, end = _cue_times(transcript, segment)
        cues.append(
            f"{number}\n{format_timestamp(start, ',')} --> {format_timestamp(end, ',')}\n{_cue_text(segment)}\n"
        )
    return "\n".join(cues)


def to_vtt(transcript: Transcript) -> str:
    cues = ["WEBVTT\n"]
    for segment in transcript.segments:
        start, end = _cue_times(transcript, segment)
        cues.append(f"{format_timestamp(start, '.')} --> {format_timestamp(end, '.')}\n{_cue_text(segment)}\n")
    return "\n".join(cues)


def word_json(word: Word) -> dict[str, Any]:
    body: dict[str, Any] = {"word": word.word.strip(), "start": round(word.start, 3), "end": round(word.end, 3)}
    if word.speaker is not None:
        body["speaker"] = word.speaker
    return body


def segment_json(segment: Segment) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": segment.id,
        "seek": segment.seek,
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        "tokens": list(segment.tokens),
        "temperature": float(segment.temperature),
        "avg_logprob": float(segment.avg_logprob),
        "compression_ratio": float(segment.compression_ratio),
        "no_speech_prob": float(segment.no_speech_prob),
    }
    if segment.speaker is not None:
        body["speaker"] = segment.speaker
    return body


def to_verbose_json(
    transcript: Transcript, granularities: frozenset[TimestampGranularity] = frozenset()
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": language_name(transcript.language),
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
    }
    if not granularities or TimestampGranularity.SEGMENT in granularities:
        body["segments"] = [segment_json(segment) for segment in transcript.segments]
    if TimestampGranularity.WORD in granularities:
        body["words"] = [word_json(word) for word in transcript.words]
    if transcript.turns is not None:
        body["turns"] = [turn_json(turn, turn.speaker) for turn in transcript.turns]
    return body


def turn_json(turn: Turn, speaker: str) -> dict[str, Any]:
    body: dict[str, Any] = {"start": round(turn.start, 3), "end": round(turn.end, 3), "speaker": speaker}
    if turn.similarity is not None:
        body["similarity"] = round(turn.similarity, 3)
    return body


def to_rttm(transcript: Transcript, file_id: str = "audio") -> str:
    """The diarizer's turns as RTTM (empty when there are none); spaces in the id or a label become underscores."""
    file_id = "_".join(file_id.split()) or "audio"
    return "".join(
        f"SPEAKER {file_id} 1 {turn.start:.3f} {turn.end - turn.start:.3f} <NA> <NA> {'_'.join(turn.speaker.split())} "
        "<NA> <NA>\n"
        for turn in transcript.turns or ()
    )


_DIARIZER_LABEL = re.compile(r"SPEAKER_\d+")


def speaker_letters(segments: Iterable[Segment], turns: Iterable[Turn] = ()) -> dict[str | None, str]:
    """OpenAI's speaker labels: each diarizer label (`SPEAKER_00`) or missing speaker becomes `A`, `B`, ... `Z`,
    `AA`, ... in order of first appearance in the segments (then in the turns, for a voice no segment has); any other
    label (a known speaker's name) is kept as it is."""
    speakers = [segment.speaker for segment in segments] + [turn.speaker for turn in turns]
    names = {speaker for speaker in speakers if speaker and not _DIARIZER_LABEL.fullmatch(speaker)}
    labels: dict[str | None, str] = {name: name for name in names}
    index = 0
    for speaker in speakers:
        if speaker in labels:
            continue
        while (letter := letter_label(index)) in names:
            index += 1
        labels[speaker] = letter
        index += 1
    return labels


def letter_label(index: int) -> str:
    """A, B, ..., Z, AA, AB, ...: the `index`-th speaker letter (0-based), as OpenAI's diarized_json labels."""
    text = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        text = chr(ord("A") + rest) + text
    return text


def diarized_segment_json(segment: Segment, speaker: str) -> dict[str, Any]:
    return {
        "id": f"seg_{segment.id}",
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "speaker": speaker,
        "text": segment.text.strip(),
        "type": "transcript.text.segment",
    }


def to_diarized_json(
    transcript: Transcript, granularities: frozenset[TimestampGranularity] = frozenset()
) -> dict[str, Any]:
    labels = speaker_letters(transcript.segments)
    body: dict[str, Any] = {
        "task": "transcribe",
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [diarized_segment_json(segment, labels[segment.speaker]) for segment in transcript.segments],
        "usage": usage(transcript.duration),
    }
    if TimestampGranularity.WORD in granularities:
        words = [word_json(word) for word in transcript.words]
        for word in words:
            if "speaker" in word:
                word["speaker"] = labels.get(word["speaker"], word["speaker"])
        body["words"] = words
    return body


def render_body(
    transcript: Transcript,
    response_format: ResponseFormat,
    granularities: frozenset[TimestampGranularity] = frozenset(),
) -> dict[str, Any] | str:
    """The response body: a dict for the JSON formats, a str for text, srt, vtt and rttm."""
    match response_format:
        case ResponseFormat.JSON:
            return to_json(transcript)
        case ResponseFormat.VERBOSE_JSON:
            return to_verbose_json(transcript, granularities)
        case ResponseFormat.DIARIZED_JSON:
            return to_diarized_json(transcript, granularities)
        case ResponseFormat.TEXT:
            return to_text(transcript)
        case ResponseFormat.SRT:
            return to_srt(transcript)
        case ResponseFormat.VTT:
            return to_vtt(transcript)
        case ResponseFormat.RTTM:
            return to_rttm(transcript)
    raise AssertionError(response_format)


def render(
    transcript: Transcript,
    response_format: ResponseFormat,
    granularities: frozenset[TimestampGranularity] = frozenset(),
) -> Response:
    """The HTTP response for a finished transcript in the asked format."""
    body = render_body(transcript, response_format, granularities)
    if isinstance(body, dict):
        return JSONResponse(body)
    return PlainTextResponse(body, media_type=MEDIA_TYPES[response_format])


def sse_event(data: dict[str, Any]) -> str:
    """One server-sent event: `data: {json}` and a blank line."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def delta_event(text: str) -> str:
    """`{"type": "transcript.text.delta", "delta": text}` (send the segment's text as decoded, with its space)."""
    return sse_event({"type": "transcript.text.delta", "delta": text})


def segment_event(segment: Segment, speaker: str) -> str:
    """`transcript.text.segment` for diarized streams (id, start, end, speaker, text); `speaker` is the segment's
    label from `speaker_letters(transcript.segments)`."""
    return sse_event(diarized_segment_json(segment, speaker))


def done_event(text: str) -> str:
    """`{"type": "transcript.text.done", "text": full_text}`: the full text, equal to the non-streamed one."""
    return sse_event({"type": "transcript.text.done", "text": text})


def error_event(body: dict[str, Any]) -> str:
    """An error after the stream started (headers are sent): `event: error` with OpenAI's error body."""
    return f"event: error\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"

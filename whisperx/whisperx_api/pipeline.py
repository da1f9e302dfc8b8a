"""One request's work, top to bottom: transcribe (WhisperX batched) → word timings (align) → speakers (diarize).

Runs in a worker thread. Code here raises domain errors and never builds HTTP responses.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from whisper_common.errors import InvalidParameter, UnsupportedTask
from whisper_common.languages import language_code
from whisper_common.transcript import Segment, Transcript, Word
from whisperx_api.align import Segments, WordAligner
from whisperx_api.diarize.base import SpeakerBounds, SpeakerTurn
from whisperx_api.diarize.select import Diarizers
from whisperx_api.models import LoadedModel

logger = logging.getLogger("whisperx_api.pipeline")

SAMPLE_RATE = 16000
NO_DIARIZATION = "none"
_SENTENCE_END = (".", "?", "!", "。", "？", "！")
_LANGUAGES_WITHOUT_SPACES = {"ja", "zh", "th", "lo", "my", "yue"}
_LONGEST_PAUSE_IN_SEGMENT = 1.5


class Cancelled(Exception):
    """The client went away; the worker stops between steps."""


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None
    batch_size: int = 8
    diarize: bool = False
    bounds: SpeakerBounds = SpeakerBounds()
    prompt: str | None = None


@dataclass
class PipelineResult:
    transcript: Transcript
    alignment: str
    diarization: str


def parse_language(value: str | None) -> str | None:
    """An ISO 639-1 code (or a Whisper language name) as Whisper's code; empty means detect; unknown is a 400."""
    if value is None or not value.strip():
        return None
    code = language_code(value.strip())
    if code is None:
        raise InvalidParameter("language", f"language '{value}' is not supported: use an ISO 639-1 code such as 'en' or 'fr'")
    return code


def check_speaker_bounds(min_speakers: int | None, max_speakers: int | None) -> SpeakerBounds:
    for name, value in (("min_speakers", min_speakers), ("max_speakers", max_speakers)):
        if value is not None and not 1 <= value <= 64:
            raise InvalidParameter(name, f"{name} must be between 1 and 64, got {value}")
    if min_speakers is not None and max_speakers is not None and min_speakers > max_speakers:
        raise InvalidParameter(
            "min_speakers", f"min_speakers ({min_speakers}) must not be greater than max_speakers ({max_speakers})"
        )
    return SpeakerBounds(min_speakers, max_speakers)


class TranscriptionPipeline:
    def __init__(self, aligner: WordAligner, diarizers: Diarizers) -> None:
        self.aligner = aligner
        self.diarizers = diarizers

    def run(
        self, model: LoadedModel, audio: np.ndarray, options: TranscribeOptions, cancel: threading.Event | None = None
    ) -> PipelineResult:
        language = options.language
        if language is not None and not model.multilingual and language != "en":
            raise UnsupportedTask("language", f"model '{model.model_id}' is English-only; it cannot transcribe '{language}'")
        if not model.multilingual:
            language = "en"
        duration = len(audio) / SAMPLE_RATE
        # Chosen (and loaded) first: a diarizer that cannot load fails the request before any decoding is spent.
        diarizer = self.diarizers.get() if options.diarize else None
        # The WhisperX pipeline swaps its tokenizer and options per call: one transcription at a time per model.
        with model.lock:
            default_options = model.pipeline.options
            if options.prompt:
                model.pipeline.options = dataclasses.replace(default_options, initial_prompt=options.prompt)
            try:
                raw = model.pipeline.transcribe(audio, batch_size=options.batch_size, language=language)
            finally:
                model.pipeline.options = default_options
        language = raw["language"]
        segments = [segment for segment in raw["segments"] if segment["text"].strip()]
        _check(cancel)
        segments, alignment = self.aligner.align(model, audio, segments, language)
        _check(cancel)
        diarization = NO_DIARIZATION
        if diarizer is not None:
            turns = diarizer(audio, options.bounds)
            assign_speakers(turns, segments)
            diarization = diarizer.method
        segments = split_segments(segments, language, by_speaker=options.diarize)
        transcript = Transcript(language=language, duration=duration, segments=to_segments(segments))
        return PipelineResult(transcript=transcript, alignment=alignment, diarization=diarization)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def assign_speakers(turns: list[SpeakerTurn], segments: Segments) -> None:
    """whisperx.assign_word_speakers: each word and segment takes the speaker it overlaps most (else the nearest)."""
    import pandas as pd
    import whisperx

    if not turns:
        return
    frame = pd.DataFrame([{"start": t.start, "end": t.end, "speaker": t.speaker} for t in turns])
    whisperx.assign_word_speakers(frame, {"segments": segments}, fill_nearest=True)


def split_segments(segments: Segments, language: str, *, by_speaker: bool) -> Segments:
    """WhisperX's segments are VAD chunks of up to 30 s; cut them at sentence ends, long pauses and speaker changes
    so a subtitle cue or a diarized segment holds one sentence of one speaker."""
    joiner = "" if language in _LANGUAGES_WITHOUT_SPACES else " "
    result: Segments = []
    for segment in segments:
        current: list[dict[str, Any]] = []
        for word in segment["words"]:
            if current and _starts_new_segment(current[-1], word, by_speaker):
                result.append(_segment_from_words(current, joiner))
                current = []
            current.append(word)
        if current:
            result.append(_segment_from_words(current, joiner))
    return result


def _starts_new_segment(previous: dict[str, Any], word: dict[str, Any], by_speaker: bool) -> bool:
    if by_speaker and previous.get("speaker") != word.get("speaker"):
        return True
    if word["start"] - previous["end"] > _LONGEST_PAUSE_IN_SEGMENT:
        return True
    return previous["word"].endswith(_SENTENCE_END)


def _segment_from_words(words: list[dict[str, Any]], joiner: str) -> dict[str, Any]:
    durations: dict[str, float] = {}
    for word in words:
        if word.get("speaker") is not None:
            durations[word["speaker"]] = durations.get(word["speaker"], 0.0) + max(word["end"] - word["start"], 0.01)
    speaker = max(durations, key=lambda name: durations[name]) if durations else None
    text = joiner.join(word["word"] for word in words)
    return {
        "start": words[0]["start"],
        "end": words[-1]["end"],
        "text": (" " if joiner else "") + text,
        "speaker": speaker,
        "words": words,
    }


def to_segments(segments: Segments) -> list[Segment]:
    return [
        Segment(
            id=index,
            start=float(segment["start"]),
            end=float(segment["end"]),
            text=segment["text"],
            speaker=segment.get("speaker"),
            words=[
                Word(
                    word=word["word"],
                    start=float(word["start"]),
                    end=float(word["end"]),
                    probability=float(word.get("score", 0.0)),
                    speaker=word.get("speaker"),
                )
                for word in segment["words"]
            ],
        )
        for index, segment in enumerate(segments)
    ]

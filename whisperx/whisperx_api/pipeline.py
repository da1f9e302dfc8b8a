"""One request's work, top to bottom: transcribe with word timings (faster-whisper's batched pipeline, Silero VAD)
→ optional wav2vec2 re-timing (align) → speakers (diarize, then known speakers named from reference clips).

Runs in a worker thread. Code here raises domain errors and never builds HTTP responses.
"""
from __future__ import annotations

import bisect
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from whisper_common.speech_gate import GateOptions, speech_only
from whisper_common.speech_guard import Report, SegmentGuard
from whisper_common.transcript import Segment, Task, Transcript, Word
from whisperx_api.align import CROSS_ATTENTION, Segments, WordAligner
from whisperx_api.diarize.base import SpeakerTurn
from whisperx_api.diarize.known import KnownSpeaker
from whisperx_api.diarize.select import Diarizers
from whisperx_api.models import LoadedModel
from whisperx_api.options import WhisperXOptions
from whisperx_api.settings import VadSettings

logger = logging.getLogger("whisperx_api.pipeline")

SAMPLE_RATE = 16000
NO_DIARIZATION = "none"
_SENTENCE_END = (".", "?", "!", "。", "？", "！")
_LANGUAGES_WITHOUT_SPACES = {"ja", "zh", "th", "lo", "my", "yue"}
_LONGEST_PAUSE_IN_SEGMENT = 1.5


class Cancelled(Exception):
    """The client went away or the job was canceled; the worker stops between steps."""


@dataclass
class PipelineResult:
    transcript: Transcript
    alignment: str
    diarization: str


class TranscriptionPipeline:
    def __init__(
        self, aligner: WordAligner, diarizers: Diarizers, vad: VadSettings | None = None, batch_size: int = 8
    ) -> None:
        self.aligner = aligner
        self.diarizers = diarizers
        self.vad = vad or VadSettings()
        self.batch_size = batch_size

    def run(
        self,
        model: LoadedModel,
        audio: np.ndarray,
        options: WhisperXOptions,
        *,
        task: Task = "transcribe",
        known_speakers: tuple[KnownSpeaker, ...] = (),
        cancel: threading.Event | None = None,
        report: Report | None = None,
    ) -> PipelineResult:
        """`task` "translate": English text from speech in any language (no wav2vec2 re-timing). The service has
        checked that the model can do what is asked (whisper_common.options.check_model_supports). `report` counts
        what the hallucination guard keeps out (the service's metric)."""
        language = options.language if model.multilingual else "en"
        duration = len(audio) / SAMPLE_RATE
        # Chosen (and loaded) first: a diarizer that cannot load fails the request before any decoding is spent.
        diarizer = self.diarizers.get() if options.with_speakers(bool(known_speakers)) else None
        segments, language = self.decode(model, audio, options, task, language, cancel, report)
        if task == "translate":  # English words over speech in `language`: keep the decoder's own timings
            alignment = CROSS_ATTENTION
        else:
            segments, alignment = self.aligner.align(audio, segments, language)
        _check(cancel)
        diarization = NO_DIARIZATION
        if diarizer is not None:
            turns = diarizer(audio, options.bounds)
            if known_speakers:
                turns = self.diarizers.matcher().name_speakers(audio, turns, known_speakers)
            assign_speakers(turns, segments)
            diarization = diarizer.method
        by_speaker = diarizer is not None
        segments = split_segments(segments, language, by_speaker=by_speaker)
        transcript = Transcript(language=language, duration=duration, segments=to_segments(segments), task=task)
        return PipelineResult(transcript=transcript, alignment=alignment, diarization=diarization)

    def decode(
        self,
        model: LoadedModel,
        audio: np.ndarray,
        options: WhisperXOptions,
        task: Task,
        language: str | None,
        cancel: threading.Event | None,
        report: Report | None = None,
    ) -> tuple[Segments, str]:
        """faster-whisper's batched decoding over Silero speech chunks, word timings from the same encoder pass; the
        one place audio becomes segments. Unless the request opted out, each chunk's text passes the hallucination
        guard (whisper_common.speech_guard), which `report`s what it drops: audio without speech was never decoded
        (`no_speech`), a chunk Whisper judges silent, without words or looping is dropped or cut. With the guard, the
        speech gate (whisper_common.speech_gate: Silero with its state renewed every 10 s, at VAD__THRESHOLD) first
        takes out what holds no speech, so that the pipeline's own VAD, whose state runs through the whole file, is
        not dulled by a long stretch of noise (jfk's first sentence after 30 s of pink noise came back half lost)."""
        from faster_whisper.transcribe import restore_speech_timestamps
        from faster_whisper.vad import VadOptions

        vad = VadOptions(
            threshold=self.vad.threshold,
            min_silence_duration_ms=self.vad.min_silence_ms,
            speech_pad_ms=self.vad.speech_pad_ms,
        )
        segments: Segments = []
        duration = len(audio) / SAMPLE_RATE
        guard = SegmentGuard(report, duration=duration, language=language) if options.hallucination_guard else None
        speech, regions = audio, None
        if guard is not None:  # the speech gate first: long stretches without speech would dull the VAD below
            speech, regions = speech_only(audio, GateOptions(threshold=self.vad.threshold))
            if not regions:
                if duration > 0:
                    guard.no_speech()
                return segments, language or "en"
        with model.lock:
            decoded, info = model.batched.transcribe(
                speech,
                language=language,
                task=task,
                batch_size=options.batch_size or self.batch_size,
                initial_prompt=options.prompt,
                word_timestamps=True,
                vad_filter=True,
                vad_parameters=vad,
            )
            if guard is not None and info.duration_after_vad == 0:
                guard.no_speech()
            if regions:
                decoded = restore_speech_timestamps(decoded, regions, SAMPLE_RATE)
            for segment in decoded:  # decoded batch by batch: a client that left stops the work between batches
                _check(cancel)
                checked = _as_segment(segment) if guard is None else guard.check(_as_segment(segment))
                if checked is None:
                    continue
                words = [
                    {"word": word.word.strip(), "start": word.start, "end": word.end, "score": round(word.probability or 0.0, 3)}
                    for word in checked.words or ()
                    if word.word.strip()
                ]
                if words:
                    segments.append({"start": words[0]["start"], "end": words[-1]["end"], "text": checked.text, "words": words})
        return segments, info.language


def _as_segment(segment: Any) -> Segment:
    """A faster-whisper segment (with words) as the guard reads it."""
    return Segment(
        id=0, start=float(segment.start), end=float(segment.end), text=segment.text,
        avg_logprob=float(segment.avg_logprob), no_speech_prob=float(segment.no_speech_prob),
        compression_ratio=float(segment.compression_ratio),
        words=[Word(word=word.word, start=float(word.start), end=float(word.end), probability=float(word.probability))
               for word in segment.words or ()],
    )


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def assign_speakers(turns: list[SpeakerTurn], segments: Segments) -> None:
    """Each word takes the speaker whose turns overlap it most, else the nearest turn's speaker (the rule of
    whisperx.assign_word_speakers with fill_nearest; importing whisperx.diarize would load pyannote.audio)."""
    if not turns:
        return
    ordered = sorted(turns, key=lambda turn: turn.start)
    starts = [turn.start for turn in ordered]
    # Turns may overlap (pyannote): the running maximum of ends is sorted, so one bisect finds the first candidate.
    reach = np.maximum.accumulate(np.array([turn.end for turn in ordered]))
    for segment in segments:
        for word in segment["words"]:
            first = int(np.searchsorted(reach, word["start"], side="right"))
            last = bisect.bisect_left(starts, word["end"])
            overlap: dict[str, float] = {}
            for turn in ordered[first:last]:
                shared = min(turn.end, word["end"]) - max(turn.start, word["start"])
                if shared > 0:
                    overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
            if overlap:
                word["speaker"] = max(overlap, key=lambda name: overlap[name])
            else:
                near = ordered[max(0, first - 1) : min(len(ordered), last + 1)]
                word["speaker"] = min(near, key=lambda turn: _distance(turn, word)).speaker


def _distance(turn: SpeakerTurn, word: dict[str, Any]) -> float:
    return max(turn.start - word["end"], word["start"] - turn.end, 0.0)


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

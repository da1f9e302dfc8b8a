"""One request's work, top to bottom: transcribe with word timings (faster-whisper's batched pipeline, Silero VAD)
→ optional wav2vec2 re-timing (align) → speakers (diarize, then known speakers named from voiceprints and reference
clips); the diarizer's own turns are kept in the result beside the segments.

Decoding reads the recording once, as it streams from the file, in windows of at most 30 s of speech
(whisper_common.windows) decoded `batch_size` at a time through the batch scheduler, which shares its CTranslate2
calls with other requests' (whisper_common.batching); it keeps only the frames' levels for snapping word timings.
The whole recording is loaded again only for the steps that need its samples (wav2vec2, diarization).

Runs in a worker thread. Code here raises domain errors and never builds HTTP responses.
"""
from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisper_common.batching import Cancelled as BatchCancelled
from whisper_common.batching import Priority
from whisper_common.batching.runtime import Batching
from whisper_common.speech_gate import RENEW_SECONDS
from whisper_common.speech_guard import Report, SegmentGuard
from whisper_common.speakers.matching import Match
from whisper_common.transcript import Segment, Task, Transcript, Turn, Word
from whisper_common.windows import AudioWindow
from whisperx_api.align import CROSS_ATTENTION, LevelMeter, Segments, WordAligner
from whisperx_api.diarize.base import SpeakerTurn
from whisperx_api.diarize.known import KnownSpeaker, KnownVoices
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
UNHEARD_SECONDS = 2.0
"""Speech a window's decoding left without a word, in a row, from which it is decoded again (see unheard_speech)."""


class Cancelled(Exception):
    """The client went away or the job was canceled; the worker stops between steps."""


@dataclass
class RecordingAudio:
    """A recording as the pipeline reads it: `blocks` once, as decoding goes; `load()` the whole of it, only for a
    step that needs every sample (loaded once)."""

    blocks: Iterable[np.ndarray]
    loader: Callable[[], np.ndarray]
    _samples: np.ndarray | None = field(default=None, repr=False)
    _seconds: float = 0.0

    @classmethod
    def of(cls, samples: np.ndarray) -> RecordingAudio:
        return cls([samples], lambda: samples)

    def load(self) -> np.ndarray:
        if self._samples is None:
            self._samples = self.loader()
        return self._samples

    def counted(self) -> Iterator[np.ndarray]:
        for block in self.blocks:
            self._seconds += len(block) / SAMPLE_RATE
            yield block

    @property
    def seconds(self) -> float:
        return self._seconds


@dataclass
class PipelineResult:
    transcript: Transcript
    alignment: str
    diarization: str


class TranscriptionPipeline:
    def __init__(
        self,
        aligner: WordAligner,
        diarizers: Diarizers,
        vad: VadSettings | None = None,
        batch_size: int = 8,
        batching: Batching | None = None,
    ) -> None:
        self.aligner = aligner
        self.diarizers = diarizers
        self.vad = vad or VadSettings()
        self.batch_size = batch_size
        self.batching = batching

    def run(
        self,
        model: LoadedModel,
        audio: RecordingAudio | np.ndarray,
        options: WhisperXOptions,
        *,
        task: Task = "transcribe",
        known_speakers: KnownVoices | tuple[KnownSpeaker, ...] = (),
        cancel: threading.Event | None = None,
        report: Report | None = None,
        priority: Priority = Priority.SYNC,
    ) -> PipelineResult:
        """`task` "translate": English text from speech in any language (no wav2vec2 re-timing). The service has
        checked that the model can do what is asked (whisper_common.options.check_model_supports). `report` counts
        what the hallucination guard keeps out (the service's metric); `priority`: a request's or a job's."""
        recording = audio if isinstance(audio, RecordingAudio) else RecordingAudio.of(audio)
        language = options.language if model.multilingual else "en"
        # Chosen (and loaded) first: a diarizer that cannot load fails the request before any decoding is spent.
        diarizer = self.diarizers.get() if options.with_speakers(bool(known_speakers)) else None
        meter = LevelMeter()
        blocks = (meter.feed(block) for block in recording.counted())
        segments, language = self.decode(model, blocks, options, task, language, cancel, report, priority=priority)
        duration = recording.seconds
        if task == "translate":  # English words over speech in `language`: keep the decoder's own timings
            alignment = CROSS_ATTENTION
        else:
            segments, alignment = self.aligner.align(recording.load, segments, language, levels=meter.levels())
        _check(cancel)
        diarization = NO_DIARIZATION
        turns: list[Turn] | None = None
        if diarizer is not None:
            samples = recording.load()
            found = diarizer(samples, options.bounds)
            matches: dict[str, Match] = {}
            if known_speakers:
                found, matches = self.diarizers.matcher().name_speakers(samples, found, known_speakers)
            assign_speakers(found, segments)
            diarization = diarizer.method
            turns = [Turn(turn.start, turn.end, turn.speaker, matches[turn.speaker].similarity
                          if turn.speaker in matches else None) for turn in found]
        by_speaker = diarizer is not None
        segments = split_segments(segments, language, by_speaker=by_speaker)
        transcript = Transcript(language=language, duration=duration, segments=to_segments(segments), task=task,
                                turns=turns)
        return PipelineResult(transcript=transcript, alignment=alignment, diarization=diarization)

    def decode(
        self,
        model: LoadedModel,
        blocks: Iterable[np.ndarray],
        options: WhisperXOptions,
        task: Task,
        language: str | None,
        cancel: threading.Event | None,
        report: Report | None = None,
        *,
        priority: Priority = Priority.SYNC,
    ) -> tuple[Segments, str]:
        """faster-whisper's batched decoding over Silero speech windows, word timings from the same encoder pass;
        `batch_size` windows of this recording at a time, their CTranslate2 calls batched with other requests'. The
        one place audio becomes segments: unless the request opted out, each window's segments pass the hallucination
        guard (whisper_common.speech_guard), which `report`s what it drops: audio without speech was never decoded
        (`no_speech`), a window Whisper judges silent, without words or looping is dropped or cut, and speech a
        window's decoding left without words is decoded again on its own (unheard_speech). With the guard, the
        VAD's Silero state is renewed every 10 s as the speech gate renews it (whisper_common.speech_gate), so a long
        stretch of noise does not dull it (jfk's first sentence after 30 s of pink noise came back half lost)."""
        from faster_whisper.vad import VadOptions

        if self.batching is None:
            raise RuntimeError("the pipeline needs the service's batch scheduler")
        vad = VadOptions(
            threshold=self.vad.threshold,
            min_silence_duration_ms=self.vad.min_silence_ms,
            speech_pad_ms=self.vad.speech_pad_ms,
            max_speech_duration_s=30,
        )
        found: list[str] = []

        def tokenizer_for(first: np.ndarray, shell: Any) -> Any:
            from faster_whisper.tokenizer import Tokenizer

            detected = language
            if detected is None:
                detected = shell.detect_language(audio=first)[0] if shell.model.is_multilingual else "en"
            found.append(detected)
            return Tokenizer(shell.hf_tokenizer, shell.model.is_multilingual, task=task, language=detected)

        segments: Segments = []
        stop = cancel or threading.Event()
        guard: SegmentGuard | None = None
        windows = 0
        with self.batching.scheduler.opened(priority, label=model.model_id) as stream:
            decoded = self.batching.decoder.decode_speech(
                model.whisper, stream, blocks, vad=vad, tokenizer_for=tokenizer_for,
                options=batched_options(model, task, options.prompt), group=options.batch_size or self.batch_size,
                cancel=stop, renew_seconds=RENEW_SECONDS if options.hallucination_guard else None,
                unheard=unheard_speech if options.hallucination_guard else None,
            )
            try:
                for window, window_segments in decoded:
                    windows += 1
                    if options.hallucination_guard and guard is None:
                        guard = SegmentGuard(report, language=found[0] if found else language)
                    for raw in window_segments:
                        segment = _as_segment(raw)
                        if guard is not None:
                            guard.duration = window.end  # nothing of this window can start after its audio
                            segment = guard.check(segment)
                        if segment is None:
                            continue
                        words = [
                            {"word": word.word.strip(), "start": word.start, "end": word.end,
                             "score": round(word.probability or 0.0, 3)}
                            for word in segment.words or ()
                            if word.word.strip()
                        ]
                        if words:
                            segments.append({"start": words[0]["start"], "end": words[-1]["end"], "text": segment.text,
                                             "words": words})
            except BatchCancelled:
                raise Cancelled() from None
            finally:
                decoded.close()
        if options.hallucination_guard and windows == 0:
            SegmentGuard(report).no_speech()  # the VAD found no speech: nothing was decoded
        return segments, found[0] if found else (language or "en")


def unheard_speech(window: AudioWindow, raw_segments: list[dict[str, Any]]) -> list[AudioWindow]:
    """The runs of a window's speech (its VAD clips) at least `UNHEARD_SECONDS` long that no word the guard would keep
    touches, to be decoded again on their own. The batched pipeline decodes a window once, at one temperature, without
    timestamps; on speech joined from several places it can write one part and stop (tiny.en, the 10-minute recording:
    a 5 s piece after jfk's sentence left out in each of its copies), or loop over the rest, which the guard then cuts.
    A window whose decoding kept no word (silent by Whisper's own rule, no words) is not decoded again."""
    scratch = SegmentGuard()
    spans = [(word.start, word.end) for raw in raw_segments
             if (kept := scratch.check(_as_segment(raw))) is not None for word in kept.words or ()]
    return window.unheard(spans, UNHEARD_SECONDS) if spans else []


def _as_segment(segment: dict[str, Any]) -> Segment:
    """A segment of BatchedInferencePipeline.forward (with words) as the guard reads it."""
    return Segment(
        id=0, start=float(segment["start"]), end=float(segment["end"]), text=segment["text"],
        avg_logprob=float(segment["avg_logprob"]), no_speech_prob=float(segment["no_speech_prob"]),
        compression_ratio=float(segment["compression_ratio"]),
        words=[Word(word=word["word"], start=float(word["start"]), end=float(word["end"]),
                    probability=float(word["probability"])) for word in segment.get("words") or ()],
    )


def batched_options(model: LoadedModel, task: Task, prompt: str | None) -> Any:
    """The options BatchedInferencePipeline.transcribe gives its `forward` (its defaults: beam 5, the first
    temperature, no timestamps, word timings on), for this request's prompt."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    tokenizer = Tokenizer(model.whisper.hf_tokenizer, model.multilingual, task=task, language="en")
    return TranscriptionOptions(
        beam_size=5, best_of=5, patience=1, length_penalty=1, repetition_penalty=1, no_repeat_ngram_size=0,
        log_prob_threshold=-1.0, no_speech_threshold=0.6, compression_ratio_threshold=2.4, temperatures=[0.0],
        initial_prompt=prompt, prefix=None, suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、", max_new_tokens=None,
        hotwords=None, word_timestamps=True, hallucination_silence_threshold=None, condition_on_previous_text=False,
        clip_timestamps=[], prompt_reset_on_temperature=0.5, multilingual=False, without_timestamps=True,
        max_initial_timestamp=0.0,
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

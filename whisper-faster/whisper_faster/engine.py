"""faster-whisper inference: options in, common Segments out, one at a time as they are decoded.

Runs in worker threads (whisper_common.concurrency). `cancel` is checked between segments so a request whose client
went away stops at the next segment."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from faster_whisper.transcribe import Segment as WhisperSegment
from faster_whisper.transcribe import TranscriptionInfo

from whisper_common.transcript import Segment, Task, Transcript, Word
from whisper_faster.models import LoadedModel

DEFAULT_TEMPERATURES: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True, slots=True)
class InferenceOptions:
    """What a request asks of the model. `temperature` None means faster-whisper's fallback schedule."""

    task: Task = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float | None = None
    word_timestamps: bool = False
    beam_size: int = 5
    vad_filter: bool = False
    hotwords: str | None = None

    def transcribe_kwargs(self) -> dict[str, object]:
        """Keyword arguments for WhisperModel.transcribe (also used by the benchmark's direct baseline)."""
        return {
            "task": self.task,
            "language": self.language,
            "initial_prompt": self.prompt or None,
            "temperature": DEFAULT_TEMPERATURES if self.temperature is None else self.temperature,
            "word_timestamps": self.word_timestamps,
            "beam_size": self.beam_size,
            "vad_filter": self.vad_filter,
            "hotwords": self.hotwords or None,
        }


class SegmentStream:
    """Decoded segments as they come (iterate it), with the transcription info known before the first one."""

    def __init__(self, model: LoadedModel, samples: np.ndarray, options: InferenceOptions, cancel: threading.Event):
        segments, info = model.whisper.transcribe(samples, **options.transcribe_kwargs())
        self.info: TranscriptionInfo = info
        self.task: Task = options.task
        self._segments = segments
        self._cancel = cancel
        self._next_id = 0

    def __iter__(self) -> Iterator[Segment]:
        return self

    def __next__(self) -> Segment:
        if self._cancel.is_set():
            self.close()
            raise StopIteration
        segment = next(self._segments)
        converted = convert_segment(segment, self._next_id)
        self._next_id += 1
        return converted

    def close(self) -> None:
        close = getattr(self._segments, "close", None)
        if close is not None:
            close()


def convert_segment(segment: WhisperSegment, segment_id: int) -> Segment:
    return Segment(
        id=segment_id,
        seek=int(segment.seek),
        start=float(segment.start),
        end=float(segment.end),
        text=segment.text,
        tokens=list(segment.tokens),
        temperature=float(segment.temperature or 0.0),
        avg_logprob=float(segment.avg_logprob),
        compression_ratio=float(segment.compression_ratio),
        no_speech_prob=float(segment.no_speech_prob),
        words=[
            Word(word=word.word, start=float(word.start), end=float(word.end), probability=float(word.probability))
            for word in segment.words
        ]
        if segment.words is not None
        else None,
    )


def transcribe(model: LoadedModel, samples: np.ndarray, options: InferenceOptions, cancel: threading.Event) -> Transcript:
    """The whole transcript (stops early, with what it has, when `cancel` is set)."""
    stream = SegmentStream(model, samples, options, cancel)
    segments = list(stream)
    return Transcript(language=stream.info.language, duration=float(stream.info.duration), segments=segments, task=options.task)

"""faster-whisper inference: options in, common Segments out, one at a time as they are decoded.

Runs in worker threads (whisper_common.concurrency). `cancel` is checked between segments so a request whose client
went away, or a canceled job, stops at the next segment."""
from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
from faster_whisper.transcribe import Segment as WhisperSegment
from faster_whisper.transcribe import TranscriptionInfo

from whisper_common.transcript import Segment, Task, Word
from whisper_faster.models import LoadedModel
from whisper_faster.options import FasterOptions


class SegmentStream:
    """Decoded segments as they come (iterate it), with the transcription info known before the first one."""

    def __init__(
        self, model: LoadedModel, samples: np.ndarray, options: FasterOptions, task: Task, cancel: threading.Event
    ) -> None:
        segments, info = model.whisper.transcribe(samples, **options.transcribe_kwargs(task))
        self.info: TranscriptionInfo = info
        self.task: Task = task
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


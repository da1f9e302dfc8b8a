"""faster-whisper inference: options in, common Segments out, one at a time as they are decoded.

Runs in worker threads (whisper_common.concurrency). `cancel` is checked between segments so a request whose client
went away, or a canceled job, stops at the next segment.

With the hallucination guard (the default), only speech is decoded: the speech gate (whisper_common.speech_gate) finds
it, its regions are joined and decoded as faster-whisper's `vad_filter` joins them, and the segments are put back on
the recording's clock; a recording without speech is not decoded at all (`info.duration_after_vad` is 0)."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
from faster_whisper.transcribe import Segment as WhisperSegment
from faster_whisper.transcribe import TranscriptionInfo, restore_speech_timestamps

from whisper_common.speech_gate import SAMPLE_RATE, speech_only
from whisper_common.transcript import Segment, Task, Word
from whisper_faster.models import LoadedModel
from whisper_faster.options import FasterOptions


class SegmentStream:
    """Decoded segments as they come (iterate it), with the transcription info known before the first one."""

    def __init__(
        self, model: LoadedModel, samples: np.ndarray, options: FasterOptions, task: Task, cancel: threading.Event
    ) -> None:
        kwargs = options.transcribe_kwargs(task)
        if options.hallucination_guard:
            segments, info = _speech_only(model, samples, kwargs)
        else:
            segments, info = model.whisper.transcribe(samples, **kwargs)
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


def _speech_only(model: LoadedModel, samples: np.ndarray,
                 kwargs: dict[str, object]) -> tuple[Iterator[WhisperSegment], TranscriptionInfo]:
    """`WhisperModel.transcribe` of the speech in `samples` only (the speech gate's regions, joined)."""
    speech, regions = speech_only(samples)
    if not regions:
        language = str(kwargs.get("language") or "en")
        info = TranscriptionInfo(language=language, language_probability=1.0, duration=len(samples) / SAMPLE_RATE,
                                 duration_after_vad=0.0, all_language_probs=None, transcription_options=None,  # type: ignore[arg-type]
                                 vad_options=None)  # type: ignore[arg-type]
        return iter(()), info
    segments, info = model.whisper.transcribe(speech, **{**kwargs, "vad_filter": False})
    info = replace(info, duration=len(samples) / SAMPLE_RATE, duration_after_vad=len(speech) / SAMPLE_RATE)
    return iter(restore_speech_timestamps(segments, regions, SAMPLE_RATE)), info


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


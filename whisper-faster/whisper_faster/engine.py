"""faster-whisper's segments as the common `Segment` (whisper_common.transcript).

The decoding itself runs through the batch scheduler (whisper_common.batching, called from `service.Decoding`): with
the hallucination guard, only the speech the gate finds (whisper_common.speech_gate's rule, Silero's state renewed) is
decoded, and each segment passes the guard's checks (whisper_common.speech_guard)."""
from __future__ import annotations

from faster_whisper.transcribe import Segment as WhisperSegment

from whisper_common.transcript import Segment, Word


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

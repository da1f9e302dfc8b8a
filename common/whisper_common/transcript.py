"""The transcript both services produce, independent of any engine and of any output format.

Build a `Transcript` from your engine's output, then hand it to `whisper_common.openai_formats`:

    transcript = Transcript(language="en", duration=11.0, task="transcribe", segments=[
        Segment(id=0, start=0.0, end=3.2, text=" And so my fellow Americans",
                words=[Word(word=" And", start=0.0, end=0.4, probability=0.9)]),
    ])

Segment ids start at 0 (as OpenAI's do). `speaker` is set by diarization (WhisperX) or a live session's speaker
labels, else None. `turns` is who spoke when as the diarizer found it, independent of the words (None when the
transcription was not diarized).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Task = Literal["transcribe", "translate"]


@dataclass(slots=True)
class Word:
    """One word with its timing; `probability` is faster-whisper's probability or WhisperX's alignment score."""

    word: str
    start: float
    end: float
    probability: float | None = None
    speaker: str | None = None


@dataclass(slots=True)
class Segment:
    """One decoded segment, with the fields of OpenAI's verbose_json segment plus optional words and speaker."""

    id: int
    start: float
    end: float
    text: str
    seek: int = 0
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] | None = None
    speaker: str | None = None


@dataclass(slots=True)
class Turn:
    """A stretch of one voice, as the diarizer found it. `similarity`: the cosine similarity of the voice to the known
    speaker (voiceprint or reference clip) that gave it its name; None for an unknown voice."""

    start: float
    end: float
    speaker: str
    similarity: float | None = None


@dataclass(slots=True)
class Transcript:
    """A whole transcription: `language` is a code (`"en"`), `duration` the audio's length in seconds."""

    language: str
    duration: float
    segments: list[Segment] = field(default_factory=list)
    task: Task = "transcribe"
    turns: list[Turn] | None = None

    def __post_init__(self) -> None:
        if self.turns:  # read back from JSON (a job's stored result): plain dicts
            self.turns = [turn if isinstance(turn, Turn) else Turn(**turn) for turn in self.turns]

    @property
    def text(self) -> str:
        return join_segment_texts(segment.text for segment in self.segments)

    @property
    def words(self) -> list[Word]:
        return [word for segment in self.segments for word in segment.words or ()]

    @property
    def has_speakers(self) -> bool:
        return any(segment.speaker is not None for segment in self.segments)


def join_segment_texts(texts: Iterable[str]) -> str:
    """Whisper segment texts carry their own leading space; the full text is their concatenation, stripped."""
    return "".join(texts).strip()

"""What the transcript library holds and answers: a transcript as indexed (`TranscriptDoc`, built from a finished job
or an ended live session), and a search hit (`Hit`, with the segments that matched).

A document's text is its segments' texts, one per line; each segment keeps its times, its speaker and where its text
lies in the document's text, so a match found in the text is a moment in the audio.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from whisper_common.transcript import Segment, Transcript

SEGMENT_SEPARATOR = "\n"
MARK_START = "\ue000"
MARK_END = "\ue001"
"""What the databases put around a matched word when they highlight a document (private-use characters, which
`clean_text` keeps out of every indexed text)."""

_UNWANTED = re.compile(r"[\x00-\x1f\x7f-\x9f\ue000\ue001]+")


class SourceKind(StrEnum):
    JOB = "job"
    REALTIME = "realtime"


def clean_text(text: str) -> str:
    """A segment's text as indexed: one line, without control characters or the highlight marks."""
    return " ".join(_UNWANTED.sub(" ", text).split())


class IndexedSegment(NamedTuple):
    """A tuple: a page of hits decodes a few thousand of them, which a frozen dataclass makes ten times slower."""

    start: float
    end: float
    speaker: str | None
    offset: int
    """Where its text begins in the document's text (characters)."""
    length: int


@dataclass(frozen=True)
class TranscriptDoc:
    """One transcript as the index keeps it."""

    id: str
    """The job's or the live session's id: `GET /v1/transcripts/{id}`."""
    source: SourceKind
    owner: str
    created_at: float
    """When the job was submitted or the session opened (Unix seconds): what `from` and `to` filter."""
    ended_at: float
    """When the job finished or the session closed: retention counts from here."""
    model: str
    language: str | None
    duration: float
    text: str
    segments: list[IndexedSegment] = field(default_factory=list)

    @property
    def speakers(self) -> list[str]:
        return sorted({segment.speaker for segment in self.segments if segment.speaker})

    def segment_text(self, segment: IndexedSegment) -> str:
        return self.text[segment.offset:segment.offset + segment.length]

    def transcript(self) -> Transcript:
        """As a Transcript (segments with their speakers), for the text, SRT and VTT renderings."""
        return Transcript(language=self.language or "", duration=self.duration, segments=[
            Segment(id=index, start=segment.start, end=segment.end, text=" " + self.segment_text(segment),
                    speaker=segment.speaker)
            for index, segment in enumerate(self.segments)
        ])


def build_doc(
    *, id: str, source: SourceKind, owner: str, created_at: float, ended_at: float, model: str, language: str | None,
    duration: float, segments: list[tuple[float, float, str | None, str]],
) -> TranscriptDoc:
    """A document from (start, end, speaker, text) segments; segments without text are left out."""
    parts: list[str] = []
    indexed: list[IndexedSegment] = []
    offset = 0
    for start, end, speaker, raw in segments:
        text = clean_text(raw)
        if not text:
            continue
        if parts:
            offset += len(SEGMENT_SEPARATOR)
        indexed.append(IndexedSegment(round(float(start), 3), round(float(end), 3), speaker or None, offset, len(text)))
        parts.append(text)
        offset += len(text)
    return TranscriptDoc(id=id, source=source, owner=owner, created_at=created_at, ended_at=ended_at, model=model,
                         language=language, duration=round(float(duration), 3), text=SEGMENT_SEPARATOR.join(parts),
                         segments=indexed)


@dataclass(frozen=True)
class Match:
    """A segment that holds words of the query: its moment, its speaker, its text (cut around the first match when
    long) and where the matched words are in that text."""

    segment: int
    start: float
    end: float
    speaker: str | None
    snippet: str
    highlights: list[tuple[int, int]]


@dataclass(frozen=True)
class Hit:
    doc: TranscriptDoc
    score: float | None
    """How well it matched (higher is better; comparable within one answer only); None without a query."""
    matches: list[Match]

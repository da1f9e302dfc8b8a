"""From a document highlighted by its database (FTS5's `highlight()`, PostgreSQL's `ts_headline(... HighlightAll)`:
the whole text with MARK_START/MARK_END around each matched word) to the segments that matched: their moment, speaker,
a snippet and where the matched words are in it. The databases' own tokenizers and stemmers decide what matched, so
"countries" finds "country" exactly where the index found it."""
from __future__ import annotations

import bisect
import re

from whisper_common.transcripts.model import MARK_END, MARK_START, IndexedSegment, Match, TranscriptDoc

MAX_MATCHES = 5
SNIPPET_CHARS = 240
_MARKED = re.compile(f"{MARK_START}([^{MARK_START}{MARK_END}]*){MARK_END}")


def marked_ranges(marked: str) -> list[tuple[int, int]]:
    """Where the marked words are, in the text without the marks."""
    ranges: list[tuple[int, int]] = []
    removed = 0  # marks seen so far: how far a position in `marked` is from the same place in the text
    for found in _MARKED.finditer(marked):
        start = found.start() - removed
        end = start + len(found.group(1))
        removed += 2
        if end > start:
            ranges.append((start, end))
    return ranges


def matches_in(doc: TranscriptDoc, marked: str, speaker: str | None = None) -> list[Match]:
    """The segments holding matched words (only `speaker`'s, when given), the best first (the most matched words,
    then the earliest), at most MAX_MATCHES."""
    offsets = [segment.offset for segment in doc.segments]
    found: dict[int, list[tuple[int, int]]] = {}
    for start, end in marked_ranges(marked):
        index = bisect.bisect_right(offsets, start) - 1
        if index < 0:
            continue
        segment = doc.segments[index]
        if start >= segment.offset + segment.length:
            continue  # in the separator between two segments (cannot happen for a word; kept safe)
        if speaker is not None and segment.speaker != speaker:
            continue
        found.setdefault(index, []).append((start - segment.offset, min(end, segment.offset + segment.length)
                                            - segment.offset))
    ranked = sorted(found.items(), key=lambda item: (-len(item[1]), item[0]))[:MAX_MATCHES]
    return [_match(doc, index, doc.segments[index], ranges) for index, ranges in ranked]


def _match(doc: TranscriptDoc, index: int, segment: IndexedSegment, ranges: list[tuple[int, int]]) -> Match:
    text = doc.segment_text(segment)
    snippet, shift = text, 0
    if len(text) > SNIPPET_CHARS:
        first = ranges[0][0]
        begin = max(0, min(first - SNIPPET_CHARS // 3, len(text) - SNIPPET_CHARS))
        begin = _word_start(text, begin)
        end = min(len(text), begin + SNIPPET_CHARS)
        snippet = ("…" if begin > 0 else "") + text[begin:end] + ("…" if end < len(text) else "")
        shift = (1 if begin > 0 else 0) - begin
        ranges = [(a, b) for a, b in ranges if a >= begin and b <= end]
    return Match(segment=index, start=segment.start, end=segment.end, speaker=segment.speaker, snippet=snippet,
                 highlights=[(a + shift, b + shift) for a, b in ranges])


def _word_start(text: str, position: int) -> int:
    """`position`, moved on to the start of the next word when it falls inside one."""
    if position == 0 or text[position - 1] == " ":
        return position
    space = text.find(" ", position)
    return position if space < 0 else space + 1

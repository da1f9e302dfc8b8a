"""Where a query's words are in a document, and from there the segments that matched: their moment, speaker, a
snippet and where the matched words are in it. The databases' own stemmers decide what matched, so "countries" finds
"country" as the index found it:

- SQLite: FTS5's `highlight()` (the whole text with MARK_START/MARK_END around each matched word; `marked_ranges`).
- PostgreSQL: PostgreSQL stems the query's words (`QueryLexemes`), the words of the text that may stem to them are
  found (`words_beginning`: words of letters and digits, as `q`'s, that begin as a lexeme does) and PostgreSQL stems
  those too, with the configuration of the index; a word matches when one of its lexemes is one of the query's (a
  prefix term: begins with its lexeme), wherever it stands (as `ts_headline(..., HighlightAll=true)` marks them).
  `ts_headline` itself would parse and stem every word of every document of the page: 2 ms a 10-minute transcript,
  more than the search.
"""
from __future__ import annotations

import bisect
import re

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from whisper_common.transcripts.model import MARK_END, MARK_START, IndexedSegment, Match, TranscriptDoc
from whisper_common.transcripts.query import Term

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


_IRREGULAR = {"die": "dy", "lie": "ly", "tie": "ty"}
"""Snowball's English stems that do not begin with their word but one letter (dying: die)."""


def query_words(terms: Iterable[Term]) -> set[str]:
    return {word.lower() for term in terms for word in term.words}


@dataclass(frozen=True)
class QueryLexemes:
    """The query's words as the database stems them: a word matches when one of its lexemes is in `exact`, or begins
    with one of `prefixes` (a prefix term)."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def of(cls, terms: Iterable[Term], stems: Mapping[str, Sequence[str]]) -> QueryLexemes:
        exact, prefixes = set(), set()
        for term in terms:
            for word in term.words:
                (prefixes if term.prefix else exact).update(stems.get(word.lower(), ()))
        return cls(frozenset(exact), tuple(sorted(prefixes)))

    def matches(self, lexemes: Iterable[str]) -> bool:
        return any(lexeme in self.exact or lexeme.startswith(self.prefixes) for lexeme in lexemes)

    def word_starts(self) -> set[str]:
        """What a word that stems to one of the lexemes begins with: the lexeme less its last letter (a stem may end
        otherwise than its word: happy, happi), or the two letters of an irregular one."""
        starts = set()
        for lexeme in self.exact | set(self.prefixes):
            starts.add(lexeme[:-1] or lexeme)
            if lexeme in _IRREGULAR:
                starts.add(_IRREGULAR[lexeme])
        return starts


def words_beginning(text: str, starts: Iterable[str]) -> dict[str, list[tuple[int, int]]]:
    """The words of `text` (letters and digits, lower case) that begin with one of `starts`, and where each stands.
    String searches, not a regular expression over the whole text: a page holds some 200 kB of text."""
    lower = text.lower()
    if len(lower) != len(text):  # a letter whose lower case is longer: positions would shift
        lower = "".join(character.lower()[0] for character in text)
    found: dict[str, list[tuple[int, int]]] = {}
    seen: set[int] = set()
    for start in starts:
        at = lower.find(start)
        while at >= 0:
            if (at == 0 or not lower[at - 1].isalnum()) and at not in seen:
                seen.add(at)
                end = at + len(start)
                while end < len(lower) and lower[end].isalnum():
                    end += 1
                found.setdefault(lower[at:end], []).append((at, end))
            at = lower.find(start, at + 1)
    return found


def matches_in(doc: TranscriptDoc, ranges: Iterable[tuple[int, int]], speaker: str | None = None) -> list[Match]:
    """The segments holding matched words (at `ranges` of the text; only `speaker`'s, when given), the best first (the
    most matched words, then the earliest), at most MAX_MATCHES."""
    offsets = [segment.offset for segment in doc.segments]
    found: dict[int, list[tuple[int, int]]] = {}
    for start, end in ranges:
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

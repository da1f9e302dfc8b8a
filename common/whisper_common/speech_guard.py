"""The hallucination guard: text nobody said is kept out of transcripts. Whisper writes "You" on silence, dots on noise
and a phrase over and over once it loses its place; a transcription's segments pass through this, in order, as they
are decoded, and what is dropped is reported by reason (`<service>_hallucinations_suppressed_total{reason}`).

    guard = SegmentGuard(metrics.hallucination_suppressed, duration=audio.duration)   # one per transcription
    if decoded_nothing_because_no_speech:
        guard.no_speech()                  # the speech gate found no speech: nothing was decoded
    for segment in segments:
        kept = guard.check(segment)        # None: dropped; else the segment, any loop cut out of it

    text = TextGuard(report).check(text)   # a live session's utterance (no segments, no timings)

The speech gate itself is whisper_common.speech_gate (Silero VAD, its state renewed) ahead of each engine: audio
outside speech is never decoded, so silence, noise and music give no text and cost no decoding. What is decoded is then
checked here:

- `no_speech_prob`: a window Whisper itself judges silent (no-speech probability above 0.6 while its average
  log-probability is below -1: faster-whisper's rule for sequential decoding, which its batched pipeline and
  hand-rolled decodes skip);
- `no_words`: a segment without a letter or a digit (". . .", "♪", "-");
- `repetition`: a word or phrase following itself more than `MAX_REPEATS` times, within a segment or across segments:
  the copies beyond the fourth are cut (with their word timings); a segment left without words is dropped;
- `outside_audio`: a segment that starts after the audio ends (a decoder that ran past the end).

Re-decoding with temperature fallback is the engine's (faster-whisper re-decodes a window whose compression ratio is
above 2.4 at higher temperatures); what still loops after it is cut here. Nothing here knows a service or an engine.
"""
from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from enum import StrEnum

from whisper_common.transcript import Segment, Word

MAX_REPEATS = 4
"""A word or phrase may follow itself this many times ("no, no, no, no" is speech); one more copy is a loop."""
MAX_PHRASE_TOKENS = 10
"""The longest phrase looked for as a loop, in words (in characters for languages written without spaces: twice it)."""
HISTORY_TOKENS = 64
"""Words of the segments already given that a new segment's loop is counted with (a loop of one-word segments)."""
NO_SPEECH_PROB = 0.6
LOG_PROB = -1.0
"""faster-whisper's defaults (`no_speech_threshold`, `log_prob_threshold`): a window is silent when its no-speech
probability is above the first and its average log-probability below the second."""
UNSPACED_LANGUAGES = frozenset({"ja", "zh", "th", "lo", "my", "yue"})
_WORD_CHARACTER = re.compile(r"[^\W_]")

Report = Callable[[str], None]
"""Called with the reason of each suppression (a metric's `.labels(reason=...).inc()`, or a test's list append)."""


class Reason(StrEnum):
    NO_SPEECH = "no_speech"
    NO_SPEECH_PROB = "no_speech_prob"
    NO_WORDS = "no_words"
    REPETITION = "repetition"
    OUTSIDE_AUDIO = "outside_audio"


def silent_window(no_speech_prob: float, avg_logprob: float) -> bool:
    """faster-whisper's rule for a decoded window that holds no speech."""
    return no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOG_PROB


def has_words(text: str) -> bool:
    return _WORD_CHARACTER.search(text) is not None


def _key(token: str) -> str:
    """What a token is compared by: its letters and digits, lower-cased; a token of punctuation only ("...") by itself."""
    return "".join(_WORD_CHARACTER.findall(token.lower())) or token.strip()


def repeated_beyond(keys: Sequence[str], first_new: int = 0, max_repeats: int = MAX_REPEATS,
                    max_phrase: int = MAX_PHRASE_TOKENS) -> set[int]:
    """Indices (at or after `first_new`) of the copies beyond the `max_repeats`-th of any phrase of up to
    `max_phrase` tokens that follows itself in `keys` (empty keys are skipped). Indices before `first_new` are context:
    they count, but are never removed."""
    positions = [index for index, key in enumerate(keys) if key]
    words = [keys[index] for index in positions]
    removed: set[int] = set()
    while True:
        best: tuple[int, int, int] | None = None  # (how many new tokens it removes, start, end) in `words` indices
        for period in range(1, max_phrase + 1):
            start = 0
            while start + period * (max_repeats + 1) <= len(words):
                copies = 1
                while words[start + copies * period:start + (copies + 1) * period] == words[start:start + period]:
                    copies += 1
                if copies > max_repeats:
                    cut_from, cut_to = start + max_repeats * period, start + copies * period
                    gain = sum(1 for index in range(cut_from, cut_to) if positions[index] >= first_new)
                    if gain and (best is None or gain > best[0]):
                        best = (gain, cut_from, cut_to)
                    start += copies * period - period + 1
                else:
                    start += 1
        if best is None:
            return removed
        _, cut_from, cut_to = best
        cut = [index for index in range(cut_from, cut_to) if positions[index] >= first_new]
        removed.update(positions[index] for index in cut)
        for index in sorted(cut, reverse=True):
            del positions[index], words[index]


class _Guard:
    def __init__(self, report: Report | None, language: str | None) -> None:
        self._report = report
        self.suppressed: Counter[str] = Counter()
        self.unspaced = language in UNSPACED_LANGUAGES
        self._history: deque[str] = deque(maxlen=HISTORY_TOKENS * (2 if self.unspaced else 1))

    @property
    def _max_phrase(self) -> int:
        return MAX_PHRASE_TOKENS * (2 if self.unspaced else 1)

    def _suppress(self, reason: Reason) -> None:
        self.suppressed[reason.value] += 1
        if self._report is not None:
            self._report(reason.value)

    def _cut_loops(self, keys: list[str]) -> set[int]:
        """Indices of `keys` (this segment's tokens) that extend a loop, counted with the history; the history then
        takes the kept ones."""
        history = list(self._history)
        removed = {index - len(history) for index in repeated_beyond(history + keys, len(history),
                                                                      max_phrase=self._max_phrase)}
        self._history.extend(key for index, key in enumerate(keys) if key and index not in removed)
        return removed


class SegmentGuard(_Guard):
    """Checks one transcription's segments in order (a new one per transcription: it remembers the last words given)."""

    def __init__(self, report: Report | None = None, *, duration: float | None = None, language: str | None = None) -> None:
        super().__init__(report, language)
        self.duration = duration

    def no_speech(self) -> None:
        """The speech gate found no speech: nothing was decoded (counted once per transcription)."""
        self._suppress(Reason.NO_SPEECH)

    def check(self, segment: Segment) -> Segment | None:
        if self.duration is not None and segment.start >= self.duration:
            self._suppress(Reason.OUTSIDE_AUDIO)
            return None
        if silent_window(segment.no_speech_prob, segment.avg_logprob):
            self._suppress(Reason.NO_SPEECH_PROB)
            return None
        if not has_words(segment.text):
            self._suppress(Reason.NO_WORDS)
            return None
        kept = self._without_loops(segment)
        if kept is not segment:
            self._suppress(Reason.REPETITION)
        return kept

    def _without_loops(self, segment: Segment) -> Segment | None:
        if segment.words:
            keys = [_key(word.word) for word in segment.words]
            removed = self._cut_loops(keys)
            if not removed:
                return segment
            words = [word for index, word in enumerate(segment.words) if index not in removed]
            if not any(has_words(word.word) for word in words):
                return None
            start = segment.start if 0 not in removed else words[0].start
            end = segment.end if len(segment.words) - 1 not in removed else words[-1].end
            return replace(segment, text=_joined_words(words), words=words, start=start, end=end)
        tokens = _tokens(segment.text, self.unspaced)
        removed = self._cut_loops([_key(token) for token in tokens])
        if not removed:
            return segment
        kept = [token for index, token in enumerate(tokens) if index not in removed]
        if not any(has_words(token) for token in kept):
            return None
        return replace(segment, text=_joined_tokens(kept, self.unspaced))


class TextGuard(_Guard):
    """Checks a text without timings (a live session's utterance): no words, or a loop cut."""

    def __init__(self, report: Report | None = None, *, language: str | None = None) -> None:
        super().__init__(report, language)

    def check(self, text: str) -> str:
        if not text.strip():
            return ""
        if not has_words(text):
            self._suppress(Reason.NO_WORDS)
            return ""
        tokens = _tokens(text, self.unspaced)
        removed = self._cut_loops([_key(token) for token in tokens])
        if not removed:
            return text
        self._suppress(Reason.REPETITION)
        kept = [token for index, token in enumerate(tokens) if index not in removed]
        return _joined_tokens(kept, self.unspaced).strip() if any(has_words(token) for token in kept) else ""


def _tokens(text: str, unspaced: bool) -> list[str]:
    return [character for character in text if not character.isspace()] if unspaced else text.split()


def _joined_tokens(tokens: list[str], unspaced: bool) -> str:
    return "".join(tokens) if unspaced else " " + " ".join(tokens)


def _joined_words(words: list[Word]) -> str:
    text = "".join(word.word for word in words)
    return text if text.startswith(" ") else " " + text

"""LocalAgreement: text that never has to be taken back. A word is confirmed once two consecutive hypotheses of the
same growing utterance agree on it (and on every word before it); only confirmed words are sent as `delta` events."""
from __future__ import annotations

import re

_NOT_WORD = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    return _NOT_WORD.sub("", word.lower())


class LocalAgreement:
    def __init__(self) -> None:
        self.confirmed: list[str] = []
        self._previous: list[str] | None = None

    @property
    def text(self) -> str:
        return " ".join(self.confirmed)

    def update(self, hypothesis: str) -> str:
        """Feed the newest hypothesis of the whole utterance; returns the delta to send ("" when nothing new)."""
        words = hypothesis.split()
        previous, self._previous = self._previous, words
        if previous is None:
            return ""
        agreed = 0
        for old, new in zip(previous, words):
            if _key(old) != _key(new) or not _key(new):
                break
            agreed += 1
        if agreed <= len(self.confirmed) or not self._extends_confirmed(words):
            return ""
        return self._confirm(words[len(self.confirmed):agreed])

    def finish(self, final: str) -> str:
        """The delta that completes the confirmed text with the final transcript, when the final begins with what was
        already sent ("" otherwise: the `completed` event then carries the correction)."""
        words = final.split()
        if len(words) <= len(self.confirmed) or not self._extends_confirmed(words):
            return ""
        return self._confirm(words[len(self.confirmed):])

    def _extends_confirmed(self, words: list[str]) -> bool:
        return len(words) >= len(self.confirmed) and all(
            _key(a) == _key(b) for a, b in zip(self.confirmed, words)
        )

    def _confirm(self, new_words: list[str]) -> str:
        delta = (" " if self.confirmed else "") + " ".join(new_words)
        self.confirmed.extend(new_words)
        return delta

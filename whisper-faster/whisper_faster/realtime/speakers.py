"""Who is speaking in a live session: each final utterance's voice (a d-vector of its audio, computed beside its
transcript) labelled with the name of the caller's voiceprint it matches, else with a session-local letter.

    speakers = SessionSpeakers(references, threshold=0.80, cluster_threshold=0.75)
    speakers.label(voice)      # "Maria", or "A", "B", ... stable within the session

Sans-io like the session it belongs to. The session's voices are clusters of utterances: an utterance joins the voice
its d-vector is closest to (cosine similarity to the voice's mean at or above `cluster_threshold`), else starts a new
one with the next letter. A voiceprint names an utterance when the utterance, or the voice it joined (whose mean
of several utterances is steadier than one short utterance), matches it at or above `threshold`; from then on the
voice carries the name. Thresholds: docs/benchmarks.md (known speakers).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from whisper_common.speakers.matching import Reference, unit


@dataclass
class _Voice:
    label: str
    total: np.ndarray
    count: int = 1
    named: bool = False

    @property
    def mean(self) -> np.ndarray:
        return unit(self.total)


@dataclass
class SessionSpeakers:
    references: Sequence[Reference]
    threshold: float
    cluster_threshold: float
    _voices: list[_Voice] = field(default_factory=list)
    _letters: int = 0

    def label(self, voice: np.ndarray) -> str:
        voice = unit(np.asarray(voice, dtype=np.float32))
        name = self._name(voice)
        joined = self._closest(voice, name)
        if joined is None:
            joined = _Voice(name or self._next_letter(), voice.copy(), named=name is not None)
            self._voices.append(joined)
        else:
            joined.total = joined.total + voice
            joined.count += 1
            if not joined.named:
                name = name or self._name(joined.mean)
                if name is not None:
                    joined.label, joined.named = name, True
        return joined.label

    def _name(self, voice: np.ndarray) -> str | None:
        if not self.references:
            return None
        similarity = np.stack([reference.embedding for reference in self.references]) @ voice
        best = int(np.argmax(similarity))
        return self.references[best].name if similarity[best] >= self.threshold else None

    def _closest(self, voice: np.ndarray, name: str | None) -> _Voice | None:
        if name is not None:  # the voiceprint's voice, wherever its utterances went so far
            for known in self._voices:
                if known.named and known.label == name:
                    return known
        if not self._voices:
            return None
        similarity = [float(known.mean @ voice) for known in self._voices]
        best = int(np.argmax(similarity))
        candidate = self._voices[best]
        if similarity[best] < self.cluster_threshold or (name is not None and candidate.named):
            return None
        return candidate

    def _next_letter(self) -> str:
        taken = {voice.label for voice in self._voices} | {reference.name for reference in self.references}
        while True:
            label = _letters(self._letters)
            self._letters += 1
            if label not in taken:
                return label


def _letters(index: int) -> str:
    text = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        text = chr(ord("A") + rest) + text
    return text

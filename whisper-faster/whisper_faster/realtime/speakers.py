"""Who is speaking in a live session: each final utterance's voice (a d-vector of its audio, computed beside its
transcript) labelled with the name of the caller's voiceprint it matches, else with a session-local letter.

    speakers = SessionSpeakers(references, threshold=0.80, cluster_threshold=0.75)
    speakers.label(voice, seconds)      # "Maria", or "A", "B", ... stable within the session

Sans-io like the session it belongs to. The rules, in order:
1. an utterance whose voice matches a voiceprint (cosine similarity at or above `threshold`) takes its name;
2. a short utterance (under `MIN_VOICE_SECONDS`: "yes", "right", a d-vector of little more than one 1.6 s window,
   too noisy to tell a new voice by) takes the label of the session's voice it is closest to;
3. else it joins the closest voice without a name whose mean it matches at or above `cluster_threshold`, and that
   voice takes a voiceprint's name once its mean (steadier than one utterance) matches the voiceprint;
4. else it is a new voice, with the next letter.
A letter is never given to another voice, so a label names one voice for the whole session. Thresholds:
docs/benchmarks.md (known speakers).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from whisper_common.openai_formats import letter_label
from whisper_common.speakers.matching import Reference, unit

MIN_VOICE_SECONDS = 1.5


@dataclass
class _Voice:
    label: str
    total: np.ndarray
    named: bool = False

    @property
    def mean(self) -> np.ndarray:
        return unit(self.total)

    def add(self, voice: np.ndarray) -> None:
        self.total = self.total + voice


@dataclass
class SessionSpeakers:
    references: Sequence[Reference]
    threshold: float
    cluster_threshold: float
    _voices: list[_Voice] = field(default_factory=list)
    _letters: int = 0

    def label(self, voice: np.ndarray, seconds: float = MIN_VOICE_SECONDS) -> str:
        voice = unit(np.asarray(voice, dtype=np.float32))
        name = self._name(voice)
        if name is not None:
            return self._join_named(name, voice).label
        if seconds < MIN_VOICE_SECONDS and self._voices:
            closest = max(self._voices, key=lambda known: float(known.mean @ voice))
            closest.add(voice)
            return closest.label
        unnamed = [known for known in self._voices if not known.named]
        similarity = [float(known.mean @ voice) for known in unnamed]
        if similarity and max(similarity) >= self.cluster_threshold:
            joined = unnamed[int(np.argmax(similarity))]
            joined.add(voice)
            name = self._name(joined.mean)
            if name is not None:  # the voice it is, told by several utterances: named from now on
                return self._join_named(name, joined.mean, absorb=joined).label
            return joined.label
        fresh = _Voice(self._next_letter(), voice.copy())
        self._voices.append(fresh)
        return fresh.label

    def _name(self, voice: np.ndarray) -> str | None:
        if not self.references:
            return None
        similarity = np.stack([reference.embedding for reference in self.references]) @ voice
        best = int(np.argmax(similarity))
        return self.references[best].name if similarity[best] >= self.threshold else None

    def _join_named(self, name: str, voice: np.ndarray, absorb: _Voice | None = None) -> _Voice:
        """The session's voice of voiceprint `name` (made on first use); `absorb`: an unnamed voice found to be it."""
        named = next((known for known in self._voices if known.named and known.label == name), None)
        if named is None and absorb is not None:
            absorb.label, absorb.named = name, True
            return absorb
        if named is None:
            named = _Voice(name, voice.copy(), named=True)
            self._voices.append(named)
            return named
        if absorb is not None:
            named.add(absorb.total)
            self._voices.remove(absorb)
        else:
            named.add(voice)
        return named

    def _next_letter(self) -> str:
        taken = {reference.name for reference in self.references}
        while True:
            label = letter_label(self._letters)
            self._letters += 1
            if label not in taken:
                return label


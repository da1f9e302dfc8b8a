"""Known speakers: diarized speakers named after known voices, the caller's voiceprints (`speakers=library` or
names, whisper_common.speakers) and reference clips sent with the request (OpenAI's `known_speaker_names[]` /
`known_speaker_references[]`).

Works on the turns of any diarizer: each diarized speaker's speech (up to `MAX_SPEAKER_SECONDS`, longest turns
first) becomes a resemblyzer d-vector, compared with each known voice's (a clip's own, or a voiceprint's: the mean of
its enrolment clips'); speakers and voices are paired one to one by cosine similarity (Hungarian assignment), and a
pair at or above the threshold gives the speaker the voice's name and its similarity. A speaker no voice matches
keeps its label; a voice may match nobody (it is not in the recording).

With `anchor`, the voiceprints also anchor the clustering of long recordings: a further diarized speaker whose voice
is closest to an already named voice, at or above the threshold, is taken to be that voice split in two by the
clustering and joins it. Off by default (DIARIZATION__ANCHOR_KNOWN_SPEAKERS): bench/anchor_known_speakers.py found
no change in DER or speaker counts on nine long recordings with every voice enrolled.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from whisper_common.speakers.encoder import SAMPLE_RATE, SpeakerEncoder
from whisper_common.speakers.matching import Match, Reference, assign
from whisperx_api.diarize.base import SpeakerTurn

KNOWN_SPEAKER_THRESHOLD = 0.86
"""Default similarity threshold: the operating point of bench/speaker_verification.py (docs/benchmarks.md, known
speakers) where false accepts stay at or below 1 % of impostor trials, for both conditions of this use: a 5 s clip
against 15 s of a speaker (0.86, false rejects 29 %) and a voiceprint of two 5 s clips against 15 s (0.86, false
rejects 21 %). It was 0.80, a guess, which let 1.9 % of impostor trials through."""
MAX_KNOWN_SPEAKERS = 4
MIN_REFERENCE_SECONDS = 2.0
MAX_REFERENCE_SECONDS = 10.0
MAX_SPEAKER_SECONDS = 30.0


@dataclass(frozen=True, eq=False)
class KnownSpeaker:
    """A name and a 16 kHz mono reference clip of that voice (2-10 s), sent with the request."""

    name: str
    samples: np.ndarray


@dataclass(frozen=True)
class KnownVoices:
    """What a request names voices with: its reference clips, and the caller's voiceprints it asked for."""

    clips: tuple[KnownSpeaker, ...] = ()
    voiceprints: tuple[Reference, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.clips or self.voiceprints)

    @classmethod
    def of(cls, known: KnownVoices | Sequence[KnownSpeaker]) -> KnownVoices:
        return known if isinstance(known, KnownVoices) else cls(clips=tuple(known))


class SpeakerMatcher:
    def __init__(self, encoder: SpeakerEncoder, threshold: float = KNOWN_SPEAKER_THRESHOLD, anchor: bool = False) -> None:
        self.encoder = encoder
        self.threshold = threshold
        self.anchor = anchor

    def references(self, known: KnownVoices) -> list[Reference]:
        """The request's clips embedded, then the voiceprints whose names no clip took."""
        clips = [Reference(clip.name, self.encoder.utterance(clip.samples)) for clip in known.clips]
        taken = {clip.name for clip in known.clips}
        return clips + [voiceprint for voiceprint in known.voiceprints if voiceprint.name not in taken]

    def name_speakers(
        self, audio: np.ndarray, turns: list[SpeakerTurn], known: KnownVoices | Sequence[KnownSpeaker]
    ) -> tuple[list[SpeakerTurn], dict[str, Match]]:
        """The turns with matched speakers renamed, and the matches by name."""
        known = KnownVoices.of(known)
        if not turns or not known:
            return turns, {}
        references = self.references(known)
        labels = list(dict.fromkeys(turn.speaker for turn in turns))
        speakers = np.stack([self.encoder.utterance(speech_of(audio, turns, label)) for label in labels])
        similarity = speakers @ np.stack([reference.embedding for reference in references]).T
        matches = assign(similarity, references, self.threshold)
        if self.anchor:
            matches.update(self._joined(similarity, references, matches))
        names = {labels[index]: match.name for index, match in matches.items()}
        by_name: dict[str, Match] = {}
        for match in matches.values():  # a voice split in two keeps its best similarity
            if match.name not in by_name or match.similarity > by_name[match.name].similarity:
                by_name[match.name] = match
        return [replace(turn, speaker=names.get(turn.speaker, turn.speaker)) for turn in turns], by_name

    def _joined(self, similarity: np.ndarray, references: list[Reference], matches: dict[int, Match]) -> dict[int, Match]:
        """Unmatched speakers whose closest voice is a named one, at or above the threshold."""
        named = {match.name for match in matches.values()}
        joined: dict[int, Match] = {}
        for index in range(similarity.shape[0]):
            if index in matches:
                continue
            best = int(np.nanargmax(np.nan_to_num(similarity[index], nan=-1.0)))
            reference = references[best]
            if reference.name in named and similarity[index, best] >= self.threshold:
                joined[index] = Match(reference.name, round(float(similarity[index, best]), 3), reference.voiceprint_id)
        return joined


def speech_of(audio: np.ndarray, turns: list[SpeakerTurn], label: str) -> np.ndarray:
    """A speaker's speech: their longest turns first, up to MAX_SPEAKER_SECONDS."""
    own = sorted((turn for turn in turns if turn.speaker == label), key=lambda turn: turn.start - turn.end)
    pieces: list[np.ndarray] = []
    total = 0
    for turn in own:
        piece = audio[int(turn.start * SAMPLE_RATE) : int(turn.end * SAMPLE_RATE)]
        pieces.append(piece[: int(MAX_SPEAKER_SECONDS * SAMPLE_RATE) - total])
        total += len(pieces[-1])
        if total >= MAX_SPEAKER_SECONDS * SAMPLE_RATE:
            break
    return np.concatenate(pieces) if pieces else np.zeros(SAMPLE_RATE, dtype=np.float32)

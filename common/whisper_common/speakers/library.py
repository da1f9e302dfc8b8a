"""The voiceprint library as the routes and the engines use it: enrolment (clips checked, cut to their speech,
embedded), reads, deletion, and the references a request matches against.

    library = SpeakerLibrary(store, settings.speakers)
    speaker = await library.enrol(owner, "Maria", [part1, part2], field="file")
    references, stale = await library.references("team-a", Selection.parse("library"))

A voiceprint is the unit-length mean of its samples' d-vectors made by the running encoder (`SpeakerEncoder.model_id`).
Samples another model made are kept but never compared with this one's: a speaker with no sample of the running model
is `stale`: reported by the routes and at start, skipped (and logged) by `speakers=library`, a 400 when asked for by
name; a new clip makes it usable again.
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_common.errors import InvalidParameter
from whisper_common.owners import Owner
from whisper_common.speakers.clips import ClipLimits, EnrolmentClip, enrolment_clip, pcm16
from whisper_common.speakers.encoder import SpeakerEncoder, weights_id
from whisper_common.speakers.errors import EncoderUnavailable, SpeakerNotFound, StaleVoiceprint
from whisper_common.speakers.matching import Reference, mean_embedding
from whisper_common.speakers.settings import SpeakerLibrarySettings
from whisper_common.speakers.speaker_net import resemblyzer_weights_path
from whisper_common.speakers.store import NewSample, SpeakerRow, SpeakerStore, StoredVoiceprint

logger = logging.getLogger("whisper_common.speakers")

SPEAKERS_FIELD = "speakers"
LIBRARY = "library"
MAX_NAME_LENGTH = 64
MAX_CLIPS_PER_REQUEST = 10
_AUTOMATIC_LABEL = re.compile(r"[A-Z]{1,2}|SPEAKER_\d+")
_BAD_NAME_CHARACTERS = re.compile(r"[\x00-\x1f\x7f,]")


def check_name(value: Any, field: str = "name") -> str:
    """A voiceprint's name: 1-64 characters, no control characters or commas (`speakers=Maria,Tom`), not `library`,
    and not one of the labels unknown voices get (`A`, `B`, ..., `SPEAKER_00`)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameter(field, f"'{field}' must be a non-empty name")
    name = value.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidParameter(field, f"'{field}' is longer than {MAX_NAME_LENGTH} characters")
    if _BAD_NAME_CHARACTERS.search(name):
        raise InvalidParameter(field, f"'{field}' must not hold commas or control characters")
    if name == LIBRARY or _AUTOMATIC_LABEL.fullmatch(name):
        raise InvalidParameter(field, f"'{name}' is reserved (unknown voices are labelled A, B, ... or SPEAKER_00, "
                               "...); choose another name")
    return name


@dataclass(frozen=True)
class Selection:
    """`speakers` of a request: the whole library of the caller, or some of its speakers by name or id."""

    everyone: bool = False
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str | Sequence[str] | None) -> Selection | None:
        if value is None:
            return None
        items = [part.strip() for part in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
        items = [item for item in items if item]
        if not items:
            return None
        if items == [LIBRARY]:
            return cls(everyone=True)
        if LIBRARY in items:
            raise InvalidParameter(SPEAKERS_FIELD, "'speakers' is either 'library' or names of your speakers, not both")
        if len(items) > 100:
            raise InvalidParameter(SPEAKERS_FIELD, "'speakers' names at most 100 speakers; use 'library' for all")
        return cls(names=tuple(dict.fromkeys(items)))

    def __str__(self) -> str:
        return LIBRARY if self.everyone else ",".join(self.names)


class SpeakerLibrary:
    def __init__(self, store: SpeakerStore, settings: SpeakerLibrarySettings,
                 encoder: SpeakerEncoder | None = None) -> None:
        self.store = store
        self.settings = settings
        self.limits = ClipLimits(settings.max_clip_seconds, settings.min_speech_seconds)
        self._encoder = encoder
        self._model_id: str | None = None
        self._lock = threading.Lock()

    def encoder(self) -> SpeakerEncoder:
        """The process's speaker encoder, loaded on first use (shared with whisperx's diarizer)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = SpeakerEncoder(weights_path())
            return self._encoder

    # -- enrolment -------------------------------------------------------------------------------------------

    async def enrol(self, owner: Owner, name: str, sources: Sequence[Any], field: str) -> SpeakerRow:
        name = check_name(name)
        samples = await asyncio.to_thread(self._samples, sources, field)
        return await asyncio.to_thread(self.store.create, owner.name, name, samples)

    async def add(self, owner: Owner, speaker_id: str, sources: Sequence[Any], field: str) -> SpeakerRow:
        if await asyncio.to_thread(self.store.get, owner, speaker_id) is None:
            raise SpeakerNotFound(speaker_id)  # before any decoding
        samples = await asyncio.to_thread(self._samples, sources, field)
        added = await asyncio.to_thread(self.store.add_samples, owner, speaker_id, samples)
        if added is None:
            raise SpeakerNotFound(speaker_id)
        return added

    def _samples(self, sources: Sequence[Any], field: str) -> list[NewSample]:
        if not sources:
            raise InvalidParameter(field, f"send at least one clip of the speaker's voice as '{field}'")
        if len(sources) > MAX_CLIPS_PER_REQUEST:
            raise InvalidParameter(field, f"at most {MAX_CLIPS_PER_REQUEST} clips per request")
        clips = [enrolment_clip(source, field=field, index=index, limits=self.limits)
                 for index, source in enumerate(sources)]  # every clip checked before any is embedded
        encoder = self.encoder()
        return [self._sample(encoder, clip) for clip in clips]

    def _sample(self, encoder: SpeakerEncoder, clip: EnrolmentClip) -> NewSample:
        return NewSample(clip.seconds, clip.speech_seconds, encoder.model_id, encoder.utterance(clip.speech),
                         pcm16(clip.samples) if self.settings.keep_audio else None)

    # -- reads -----------------------------------------------------------------------------------------------

    async def list(self, owner: Owner, limit: int, after: str | None) -> list[SpeakerRow]:
        return await asyncio.to_thread(self.store.list, owner, limit, after)

    async def get(self, owner: Owner, speaker_id: str) -> SpeakerRow:
        speaker = await asyncio.to_thread(self.store.get, owner, speaker_id)
        if speaker is None:
            raise SpeakerNotFound(speaker_id)
        return speaker

    async def delete(self, owner: Owner, speaker_id: str) -> None:
        if not await asyncio.to_thread(self.store.delete, owner, speaker_id):
            raise SpeakerNotFound(speaker_id)

    def model_id(self) -> str:
        """The running encoder's model id (from its weights file; the network itself is loaded on first use)."""
        if self._model_id is None:
            self._model_id = self._encoder.model_id if self._encoder is not None else weights_id(weights_path())
        return self._model_id

    def is_stale(self, speaker: SpeakerRow) -> bool:
        return not any(sample.model == self.model_id() for sample in speaker.samples)

    # -- matching --------------------------------------------------------------------------------------------

    async def references(self, owner: str, selection: Selection) -> tuple[list[Reference], list[str]]:
        """The caller's voiceprints a request asked for, as references; and the ids of those skipped as stale
        (`library` only: a stale speaker asked for by name is a 400)."""
        return await asyncio.to_thread(self.references_now, owner, selection)

    def references_now(self, owner: str, selection: Selection) -> tuple[list[Reference], list[str]]:
        stored = self.store.voiceprints(owner, None if selection.everyone else selection.names)
        if not selection.everyone:
            known = {voiceprint.name for voiceprint in stored} | {voiceprint.id for voiceprint in stored}
            missing = [name for name in selection.names if name not in known]
            if missing:
                raise InvalidParameter(SPEAKERS_FIELD, f"you have no speaker named '{missing[0][:64]}' "
                                       "(GET /v1/speakers lists them)")
        model = self.model_id()
        references, stale = [], []
        for voiceprint in stored:
            embeddings = voiceprint.embeddings.get(model)
            if embeddings:
                references.append(Reference(voiceprint.name, mean_embedding(embeddings), voiceprint.id))
            elif selection.everyone:
                stale.append(voiceprint.id)
            else:
                raise StaleVoiceprint(SPEAKERS_FIELD, _stale_message(voiceprint, model))
        if stale:
            logger.warning("stale voiceprints skipped: made by another embedding model",
                           extra={"owner": owner, "speakers": stale, "model": model})
        return references, stale

    def check_models(self) -> dict[str, int]:
        """Samples made by other embedding models than the running one (logged once at start: a model change)."""
        other = {model: count for model, count in self.store.models().items() if model != self.model_id()}
        if other:
            logger.warning("voiceprints made by another embedding model: they are not used until re-enrolled "
                           "(or re-embedded from kept audio)", extra={"models": other, "running": self.model_id()})
        return other


def _stale_message(voiceprint: StoredVoiceprint, model: str) -> str:
    made_by = ", ".join(sorted(voiceprint.embeddings))
    return (f"the speaker '{voiceprint.name}' ({voiceprint.id}) was enrolled with the embedding model {made_by}; this "
            f"server runs {model}, whose vectors cannot be compared with those: add a clip to it again "
            f"(POST /v1/speakers/{voiceprint.id}/samples)")



def weights_path() -> Path:
    """The encoder's weights; EncoderUnavailable (503) when the package that ships them is not installed."""
    try:
        return resemblyzer_weights_path()
    except FileNotFoundError as exc:
        raise EncoderUnavailable(str(exc)) from None

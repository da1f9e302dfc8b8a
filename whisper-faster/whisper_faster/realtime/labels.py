"""The route's side of live speaker labels: the caller's voiceprints loaded when a session opens, the session's
`transcription.speakers` applied at each update, and each final's voice embedded beside its transcript.

    labels = LiveLabels(library, settings)                  # REALTIME_SPEAKERS on, the voiceprint library open
    outputs = await labels.attach(session, owner.name)      # session.speakers set (or an error event: library down)
    outputs = labels.configure(session)                     # after a session.update
    started = labels.start_voice(request)                   # a final's voice, embedded beside its decode
    voice = labels.voice(request, text, started)            # in the decode's worker thread, once the text is there

The voice is the d-vector of the utterance's own audio (not the earlier utterance heard as left context), computed in
a thread of its own while the final is decoded (one CPU thread: it overlaps CTranslate2's instead of adding to the time
after the commit). The final's decode waits for it, so its cost is inside the time the admission records for the
final (the realtime factor) where it outlasts the decode, and always in the process's CPU time it samples (what one
session costs): REALTIME_MAX_LOAD and REALTIME_MAX_CPU count it.
"""
from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np

from whisper_common.errors import ApiError
from whisper_common.speakers.encoder import SpeakerEncoder
from whisper_common.speakers.library import Selection, SpeakerLibrary
from whisper_common.speakers.matching import Reference
from whisper_faster.realtime import events as ev
from whisper_faster.realtime.session import DecodeRequest, Output, RealtimeSession, Send
from whisper_faster.realtime.speakers import SessionSpeakers
from whisper_faster.settings import Settings

logger = logging.getLogger("whisper_faster.realtime")

OFF = "off"
PARAM = "transcription.speakers"


class LiveLabels:
    def __init__(self, library: SpeakerLibrary, settings: Settings) -> None:
        self.library = library
        self.threshold = settings.realtime_speaker_threshold
        self.cluster_threshold = settings.realtime_speaker_cluster_threshold
        self._references: dict[str, list[Reference]] = {}
        self._encoder: SpeakerEncoder | None = None

    async def attach(self, session: RealtimeSession, owner: str) -> list[Output]:
        """Load the owner's voiceprints and the encoder; the session labels speakers from now on."""
        try:
            self._encoder = await asyncio.to_thread(self.library.encoder)
            references, _ = await self.library.references(owner, Selection(everyone=True))
        except ApiError as exc:  # the encoder's weights are not installed here, say
            logger.warning("live speaker labels unavailable", extra={"reason": exc.message})
            return []
        self._references[session.session_id] = references
        session.speakers = SessionSpeakers(references, self.threshold, self.cluster_threshold)
        return self.configure(session)

    def configure(self, session: RealtimeSession) -> list[Output]:
        """Apply `transcription.speakers` (off, library, or names): the voices heard so far keep their labels."""
        everyone = self._references.get(session.session_id)
        if everyone is None:
            return []
        wanted = (session.config.speakers or "").strip()
        if wanted.lower() == OFF:
            session.speakers = None
            return []
        outputs: list[Output] = []
        try:
            selection = Selection.parse(wanted) or Selection(everyone=True)
        except ApiError as exc:
            selection = Selection(everyone=True)
            outputs.append(Send(ev.error_event(exc.message, "invalid_value", param=PARAM)))
        chosen = everyone if selection.everyone else [
            reference for reference in everyone
            if reference.name in selection.names or reference.voiceprint_id in selection.names
        ]
        known = {reference.name for reference in chosen} | {reference.voiceprint_id for reference in chosen}
        missing = [name for name in selection.names if name not in known]
        if missing:
            outputs.append(Send(ev.error_event(
                f"you have no speaker named '{missing[0][:64]}' with a voiceprint of the running model (GET "
                "/v1/speakers lists them); the others label this session", "speaker_not_found", param=PARAM)))
        if session.speakers is None:
            session.speakers = SessionSpeakers(chosen, self.threshold, self.cluster_threshold)
        else:
            session.speakers.references = chosen
        return outputs

    def detach(self, session: RealtimeSession) -> None:
        self._references.pop(session.session_id, None)

    def start_voice(self, request: DecodeRequest) -> Voice | None:
        """Start the d-vector of a final's utterance in a thread of its own, to run beside the final's decode rather
        than after it (what it adds to commit -> completed is then the part that does not overlap); None for a
        partial."""
        if not request.final or self._encoder is None:
            return None
        return Voice(self._encoder, request.samples[request.context_samples:])

    def voice(self, request: DecodeRequest, text: str, started: Voice | None = None) -> np.ndarray | None:
        """The d-vector of a final's utterance (blocking: in the decode's worker thread), waiting for `started` where
        it was started beside the decode; None where none is needed (a partial, or a final without text)."""
        if not request.final or not text or self._encoder is None:
            return None
        if started is not None:
            return started.result()
        return self._encoder.utterance(request.samples[request.context_samples:])


class Voice:
    """One utterance's d-vector, computed in a daemon thread from the moment it is made."""

    def __init__(self, encoder: SpeakerEncoder, samples: np.ndarray) -> None:
        self._result: np.ndarray | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(encoder, samples), name="live-voice", daemon=True)
        self._thread.start()

    def _run(self, encoder: SpeakerEncoder, samples: np.ndarray) -> None:
        try:
            self._result = encoder.utterance(samples)
        except BaseException as exc:  # noqa: BLE001 - raised again in the thread that waits for it
            self._error = exc

    def result(self) -> np.ndarray:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

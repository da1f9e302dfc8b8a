"""WhisperX's side of jobs (whisper_common.jobs): the options model (whisperx_api.options: the transcription routes'
fields without the known speakers' clips; `speakers` names voiceprints of the job's owner) and the engine call, which
is the routes' own (`WhisperXService.transcribe_file`): transcribe → align → diarize, stopping between steps when the
job is canceled. The voiceprints are checked at submit (a name the owner does not have is a 400) and read again when
the job runs (a speaker deleted meanwhile is not matched)."""
from __future__ import annotations

import threading
from pathlib import Path

from whisper_common.jobs import ProgressCallback
from whisper_common.speakers.library import Selection, SpeakerLibrary
from whisper_common.transcript import Transcript
from whisper_common.usage.meter import current_metering
from whisperx_api.diarize.known import KnownVoices
from whisperx_api.options import FORMATS, WhisperXOptions
from whisperx_api.service import WhisperXService


class WhisperXJobEngine:
    options_model = WhisperXOptions
    formats = FORMATS

    def __init__(self, service: WhisperXService, library: SpeakerLibrary | None = None) -> None:
        self.service = service
        self.library = library

    def check(self, options: WhisperXOptions) -> None:
        self.service.model_id(options)
        selection = options.selection
        if selection is not None and not selection.everyone:
            self._library().references_now(_owner(), selection)

    async def run(
        self, audio: Path, options: WhisperXOptions, progress: ProgressCallback, cancel: threading.Event
    ) -> Transcript:
        known = KnownVoices()
        selection = options.selection
        if selection is not None:
            known = KnownVoices(voiceprints=tuple(await self._voiceprints(selection)))
        result = await self.service.transcribe_file(audio, options, progress, cancel, known_speakers=known)
        return result.transcript

    async def _voiceprints(self, selection: Selection) -> list:
        references, _ = await self._library().references(_owner(), selection)
        return references

    def _library(self) -> SpeakerLibrary:
        if self.library is None:
            raise RuntimeError("this job engine was built without the voiceprint library")
        return self.library


def _owner() -> str:
    """Whose job it is: the request's caller at submit, the job's owner when it runs (both metered)."""
    metering = current_metering()
    return metering.owner if metering is not None else ""

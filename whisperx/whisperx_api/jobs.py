"""WhisperX's side of jobs (whisper_common.jobs): the options model (whisperx_api.options: the transcription routes'
fields without the known speakers' clips) and the engine call, which is the routes' own
(`WhisperXService.transcribe_file`): transcribe → align → diarize, stopping between steps when the job is canceled."""
from __future__ import annotations

import threading
from pathlib import Path

from whisper_common.jobs import ProgressCallback
from whisper_common.transcript import Transcript
from whisperx_api.options import FORMATS, WhisperXOptions
from whisperx_api.service import WhisperXService


class WhisperXJobEngine:
    options_model = WhisperXOptions
    formats = FORMATS

    def __init__(self, service: WhisperXService) -> None:
        self.service = service

    def check(self, options: WhisperXOptions) -> None:
        self.service.model_id(options)

    async def run(
        self, audio: Path, options: WhisperXOptions, progress: ProgressCallback, cancel: threading.Event
    ) -> Transcript:
        result = await self.service.transcribe_file(audio, options, progress, cancel)
        return result.transcript

"""whisper-faster's side of jobs (whisper_common.jobs): the options model with `task` (whisper_faster.options) and the
engine call, which is the synchronous routes' own (`TranscriptionService.transcribe_file`): progress per segment, and a
canceled job stops at the next segment."""
from __future__ import annotations

import threading
from pathlib import Path

from whisper_common.jobs import ProgressCallback
from whisper_common.openai_formats import TRANSCRIPTION_FORMATS
from whisper_common.transcript import Transcript
from whisper_faster.options import FasterJobOptions
from whisper_faster.service import TranscriptionService


class FasterJobEngine:
    options_model = FasterJobOptions
    formats = TRANSCRIPTION_FORMATS

    def __init__(self, service: TranscriptionService) -> None:
        self.service = service

    def check(self, options: FasterJobOptions) -> None:
        self.service.model_id(options, options.task)

    async def run(
        self, audio: Path, options: FasterJobOptions, progress: ProgressCallback, cancel: threading.Event
    ) -> Transcript:
        return await self.service.transcribe_file(audio, options, progress, cancel, task=options.task)

"""WhisperX's side of jobs (whisper_common.jobs): the job form fields (those of `/transcribe` and the OpenAI route:
diarization, speaker bounds, batch size) and the engine call, the same path as a synchronous request (gate, model
manager, transcribe → align → diarize), stopping between steps when the job is canceled."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from whisper_common.concurrency import run_in_worker
from whisper_common.jobs import JobOptions, ProgressCallback
from whisper_common.openai_formats import (
    TRANSCRIPTION_FORMATS,
    ResponseFormat,
    parse_response_format,
)
from whisper_common.transcript import Transcript
from whisper_common.uploads import decode_audio
from whisperx_api.pipeline import TranscribeOptions, check_speaker_bounds, parse_language
from whisperx_api.service import WhisperXService

FORMATS = (*TRANSCRIPTION_FORMATS, ResponseFormat.DIARIZED_JSON)


class WhisperXJobOptions(JobOptions):
    """The fields of `POST /transcribe` and `POST /v1/audio/transcriptions`."""

    model: str | None = Field(None, description="`tiny`, `small`, ..., a repo id; unset: WHISPER__MODEL.")
    language: str | None = Field(None, description="ISO 639-1 code of the spoken language; unset: detected.")
    prompt: str | None = Field(None, description="Text to guide the style or vocabulary.")
    response_format: str | None = Field(
        None, description="Default format of the result: `json`, `text`, `srt`, `verbose_json`, `vtt`, `diarized_json`."
    )
    temperature: float | None = Field(None, ge=0.0, le=1.0, description="Accepted for compatibility.")
    diarize: bool | None = Field(None, description="Label speakers. Default: true for `diarized_json`, else false.")
    min_speakers: int | None = Field(None, ge=1, le=64, description="With diarization: at least this many speakers.")
    max_speakers: int | None = Field(None, ge=1, le=64, description="With diarization: at most this many speakers.")
    batch_size: int | None = Field(None, ge=1, le=256, description="WhisperX batch size; unset: BATCH_SIZE.")

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return parse_language(value)

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        return parse_response_format(value, allowed=FORMATS).value if value else None

    @model_validator(mode="after")
    def _bounds(self) -> WhisperXJobOptions:
        check_speaker_bounds(self.min_speakers, self.max_speakers)  # 400 naming min_speakers, at submit
        return self


class WhisperXJobEngine:
    options_model = WhisperXJobOptions
    formats = FORMATS

    def __init__(self, service: WhisperXService) -> None:
        self.service = service

    async def run(
        self, audio: Path, options: WhisperXJobOptions, progress: ProgressCallback, cancel: threading.Event
    ) -> Transcript:
        service = self.service
        diarize = options.diarize if options.diarize is not None else options.response_format == "diarized_json"
        transcribe_options = TranscribeOptions(
            language=options.language,
            batch_size=options.batch_size or service.settings.batch_size,
            diarize=diarize,
            bounds=check_speaker_bounds(options.min_speakers, options.max_speakers),
            prompt=options.prompt.strip() if options.prompt and options.prompt.strip() else None,
        )
        model_id = service.model_id(options.model)
        async with service.gate.slot(), service.manager.use(model_id) as model:
            decoded = await run_in_worker(
                service.gate, lambda _: decode_audio(str(audio), max_seconds=service.settings.max_audio_seconds)
            )
            progress(0.0, decoded.duration)
            started = time.perf_counter()
            result = await run_in_worker(
                service.gate, lambda _: service.pipeline.run(model, decoded.samples, transcribe_options, cancel)
            )
            service.metrics.audio_seconds.labels(model=model_id, task="transcribe").inc(decoded.duration)
            service.metrics.inference_seconds.labels(model=model_id, task="transcribe").observe(
                time.perf_counter() - started
            )
            progress(decoded.duration, decoded.duration)
            return result.transcript

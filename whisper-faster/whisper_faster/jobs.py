"""whisper-faster's side of jobs (whisper_common.jobs): the job form fields (the synchronous routes' fields plus
`task`) and the engine call, the same path as a synchronous request (gate, model manager, faster-whisper), reporting
progress per segment and stopping at the next segment when the job is canceled."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from whisper_common.concurrency import run_in_worker
from whisper_common.jobs import JobOptions, ProgressCallback
from whisper_common.languages import language_code
from whisper_common.model_catalog import resolve_model_id
from whisper_common.openai_formats import (
    TRANSCRIPTION_FORMATS,
    TimestampGranularity,
    parse_response_format,
)
from whisper_common.transcript import Transcript
from whisper_common.uploads import decode_audio
from whisper_faster.engine import InferenceOptions, SegmentStream
from whisper_faster.service import TranscriptionService, check_model_supports


class FasterJobOptions(JobOptions):
    """The fields of `POST /v1/audio/transcriptions` (and `/translations` with `task=translate`)."""

    task: Literal["transcribe", "translate"] = Field("transcribe", description="`transcribe` or `translate` (to English).")
    model: str | None = Field(None, description="`tiny.en` (embedded), `whisper-1` (= the default), a size or repo id.")
    language: str | None = Field(None, description="ISO-639-1 code of the spoken language; unset: detected.")
    prompt: str | None = Field(None, description="Text to guide the style or continue a previous segment.")
    response_format: str | None = Field(
        None, description="Default format of the result: `json`, `text`, `srt`, `verbose_json` or `vtt`."
    )
    temperature: float | None = Field(None, ge=0.0, le=1.0, description="Sampling temperature 0-1.")
    beam_size: int = Field(5, ge=1, le=20, description="Extension: beam search width.")
    vad_filter: bool = Field(False, description="Extension: skip non-speech with Silero VAD.")
    hotwords: str | None = Field(None, description="Extension: words or phrases to favour.")

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        code = language_code(value)
        if code is None:
            raise ValueError(f"language '{value[:50]}' is not supported; use an ISO-639-1 code such as 'en'")
        return code

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        return parse_response_format(value).value if value else None


class FasterJobEngine:
    options_model = FasterJobOptions
    formats = TRANSCRIPTION_FORMATS

    def __init__(self, service: TranscriptionService) -> None:
        self.service = service

    async def run(
        self, audio: Path, options: FasterJobOptions, progress: ProgressCallback, cancel: threading.Event
    ) -> Transcript:
        service = self.service
        model_id = resolve_model_id(options.model, service.settings)
        inference = InferenceOptions(
            task=options.task,
            language=options.language,
            prompt=options.prompt,
            temperature=options.temperature,
            word_timestamps=TimestampGranularity.WORD.value in (options.timestamp_granularities or ()),
            beam_size=options.beam_size,
            vad_filter=options.vad_filter,
            hotwords=options.hotwords,
        )
        async with service.gate.slot(), service.manager.use(model_id) as model:
            check_model_supports(model, inference)
            decoded = await run_in_worker(
                service.gate, lambda _: decode_audio(str(audio), max_seconds=service.settings.max_audio_seconds)
            )
            progress(0.0, decoded.duration)

            def work(_: threading.Event) -> Transcript:
                stream = SegmentStream(model, decoded.samples, inference, cancel)
                segments = []
                for segment in stream:
                    segments.append(segment)
                    progress(min(segment.end, decoded.duration), decoded.duration)
                return Transcript(
                    language=stream.info.language, duration=float(stream.info.duration), segments=segments,
                    task=inference.task,
                )

            started = time.perf_counter()
            transcript = await run_in_worker(service.gate, work)
            service.metrics.audio_seconds.labels(model=model_id, task=inference.task).inc(decoded.duration)
            service.metrics.inference_seconds.labels(model=model_id, task=inference.task).observe(
                time.perf_counter() - started
            )
            return transcript

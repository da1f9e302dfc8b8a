"""A request's path below the route: admission (gate), model (manager), decoding and the pipeline in worker threads."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import BinaryIO

from starlette.requests import Request

from whisper_common.concurrency import InferenceGate, run_in_worker
from whisper_common.metrics import ServiceMetrics
from whisper_common.model_catalog import resolve_model_id
from whisper_common.models import ModelManager
from whisper_common.uploads import DecodedAudio, decode_audio
from whisperx_api.models import LoadedModel
from whisperx_api.pipeline import PipelineResult, TranscribeOptions, TranscriptionPipeline
from whisperx_api.settings import WhisperXSettings

logger = logging.getLogger("whisperx_api.service")


@dataclass
class WhisperXService:
    settings: WhisperXSettings
    manager: ModelManager[LoadedModel]
    pipeline: TranscriptionPipeline
    gate: InferenceGate
    metrics: ServiceMetrics

    def model_id(self, requested: str | None) -> str:
        return resolve_model_id(requested, self.settings)

    async def transcribe(
        self, request: Request, model_id: str, upload: BinaryIO, options: TranscribeOptions
    ) -> PipelineResult:
        async with self.gate.slot(request), self.manager.use(model_id) as model:
            audio = await run_in_worker(self.gate, lambda _: self._decode(upload), request)
            started = time.perf_counter()
            result = await run_in_worker(
                self.gate, lambda cancel: self.pipeline.run(model, audio.samples, options, cancel), request
            )
            self._record(model_id, audio, result, time.perf_counter() - started)
            return result

    def _decode(self, upload: BinaryIO) -> DecodedAudio:
        upload.seek(0)
        return decode_audio(upload, max_seconds=self.settings.max_audio_seconds)

    def _record(self, model_id: str, audio: DecodedAudio, result: PipelineResult, seconds: float) -> None:
        task = result.transcript.task
        self.metrics.audio_seconds.labels(model=model_id, task=task).inc(audio.duration)
        self.metrics.inference_seconds.labels(model=model_id, task=task).observe(seconds)
        logger.info(
            "inference done",
            extra={
                "model": model_id,
                "audio_seconds": round(audio.duration, 2),
                "inference_seconds": round(seconds, 3),
                "alignment": result.alignment,
                "diarization": result.diarization,
                "segments": len(result.transcript.segments),
            },
        )

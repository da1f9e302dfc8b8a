"""A request's path below the route: admission (gate), model (manager), audio decoding and inference in worker threads.

Routes hand it a canonical model id, the uploaded file and InferenceOptions; it returns a Transcript, or for streaming
an async iterator of Segments that holds its slot and model until it is exhausted or closed."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import BinaryIO

from starlette.requests import Request

from whisper_common.concurrency import InferenceGate, iterate_in_worker, run_in_worker
from whisper_common.errors import InvalidParameter, UnsupportedTask
from whisper_common.metrics import ServiceMetrics
from whisper_common.models import ModelManager
from whisper_common.transcript import Segment, Transcript
from whisper_common.uploads import DecodedAudio, decode_audio
from whisper_faster.engine import InferenceOptions, SegmentStream, transcribe
from whisper_faster.models import LoadedModel
from whisper_faster.settings import Settings

logger = logging.getLogger("whisper_faster.service")


@dataclass
class TranscriptionService:
    settings: Settings
    manager: ModelManager[LoadedModel]
    gate: InferenceGate
    metrics: ServiceMetrics

    async def transcribe(
        self, request: Request, model_id: str, upload: BinaryIO, options: InferenceOptions
    ) -> Transcript:
        async with self.gate.slot(request), self.manager.use(model_id) as model:
            check_model_supports(model, options)
            audio = await run_in_worker(self.gate, lambda _: self._decode(upload), request)
            started = time.perf_counter()
            transcript = await run_in_worker(
                self.gate, lambda cancel: transcribe(model, audio.samples, options, cancel), request
            )
            self._record(model_id, options, audio, time.perf_counter() - started)
            return transcript

    async def open_stream(
        self, request: Request, model_id: str, upload: BinaryIO, options: InferenceOptions
    ) -> tuple[AsyncIterator[Segment], AsyncExitStack]:
        """Admit, load and decode before the response starts (so those errors are plain JSON errors); the returned
        iterator yields segments as they are decoded. Close the exit stack when the response is done."""
        resources = AsyncExitStack()
        try:
            await resources.enter_async_context(self.gate.slot(request))
            model = await resources.enter_async_context(self.manager.use(model_id))
            check_model_supports(model, options)
            audio = await run_in_worker(self.gate, lambda _: self._decode(upload), request)
        except BaseException:
            await resources.aclose()
            raise
        return self._segments(model, audio, options), resources

    async def _segments(
        self, model: LoadedModel, audio: DecodedAudio, options: InferenceOptions
    ) -> AsyncIterator[Segment]:
        started = time.perf_counter()

        def start(cancel: threading.Event) -> SegmentStream:
            return SegmentStream(model, audio.samples, options, cancel)

        async for segment in iterate_in_worker(self.gate, start):
            yield segment
        self._record(model.model_id, options, audio, time.perf_counter() - started)

    def _decode(self, upload: BinaryIO) -> DecodedAudio:
        upload.seek(0)
        return decode_audio(upload, max_seconds=self.settings.max_audio_seconds)

    def _record(self, model_id: str, options: InferenceOptions, audio: DecodedAudio, seconds: float) -> None:
        self.metrics.audio_seconds.labels(model=model_id, task=options.task).inc(audio.duration)
        self.metrics.inference_seconds.labels(model=model_id, task=options.task).observe(seconds)
        logger.info(
            "inference done",
            extra={
                "model": model_id,
                "task": options.task,
                "audio_seconds": round(audio.duration, 2),
                "inference_seconds": round(seconds, 3),
            },
        )


def check_model_supports(model: LoadedModel, options: InferenceOptions) -> None:
    """English-only models neither translate nor transcribe other languages: say so (400) instead of guessing."""
    if model.is_multilingual:
        return
    if options.task == "translate":
        raise UnsupportedTask(
            "model",
            f"model '{model.model_id}' is English-only and cannot translate; use a multilingual model such as 'small'",
        )
    if options.language not in (None, "en"):
        raise InvalidParameter(
            "language", f"model '{model.model_id}' is English-only; language '{options.language}' is not supported"
        )

"""A file's transcription below the route, for the routes and jobs alike: the English-only check, admission (gate),
the model (manager), audio decoding and the pipeline (transcribe → align → diarize) in worker threads, and the metrics.

    result = await service.transcribe_file(source, options, progress, cancel, request=request)

The pipeline's `decode` is the one place where a file's audio becomes segments: the audio streams from the file (a
request's windows go before a job's in the batch scheduler) and the hallucination guard checks the segments there
(its suppressions counted in this service's metrics); the steps that need the whole recording load it again.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from starlette.requests import Request

from whisper_common.audio_stream import AudioStream
from whisper_common.batching import Priority
from whisper_common.concurrency import InferenceGate, run_in_worker
from whisper_common.jobs.contract import ProgressCallback
from whisper_common.metrics import ServiceMetrics
from whisper_common.model_manager import ModelManager
from whisper_common.options import check_model_supports, checked_model_id
from whisper_common.transcript import Task
from whisper_common.uploads import DecodedAudio, decode_audio
from whisperx_api.diarize.known import KnownSpeaker, KnownVoices
from whisperx_api.models import LoadedModel
from whisperx_api.options import WhisperXOptions
from whisperx_api.pipeline import PipelineResult, RecordingAudio, TranscriptionPipeline
from whisperx_api.settings import WhisperXSettings

AudioSource = BinaryIO | Path | str
"""An upload's file object, or the path of a stored one (a job's audio)."""


@dataclass
class WhisperXService:
    settings: WhisperXSettings
    manager: ModelManager[LoadedModel]
    pipeline: TranscriptionPipeline
    gate: InferenceGate
    metrics: ServiceMetrics

    def model_id(self, options: WhisperXOptions, task: Task = "transcribe") -> str:
        """The canonical model id, refused (400) when its name says it cannot do `task` in the asked language."""
        return checked_model_id(options.model, options.language, self.settings, task)

    async def transcribe_file(
        self,
        source: AudioSource,
        options: WhisperXOptions,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        *,
        task: Task = "transcribe",
        known_speakers: KnownVoices | tuple[KnownSpeaker, ...] = (),
        request: Request | None = None,
    ) -> PipelineResult:
        """The pipeline's result; it stops between steps (Cancelled) when `cancel` is set or `request`'s client goes
        away (then ClientDisconnected)."""
        model_id = self.model_id(options, task)
        priority = Priority.SYNC if request is not None else Priority.JOB
        async with self.gate.slot(request), self.manager.use(model_id) as model:
            check_model_supports(model_id, task, options.language, model)
            stream, blocks = await run_in_worker(self.gate, lambda _: self._open(source), request)
            try:
                if progress is not None:
                    progress(0.0, stream.declared_seconds or 0.0)
                audio = RecordingAudio(blocks, lambda: self._decode(source).samples)
                started = time.perf_counter()
                result = await run_in_worker(
                    self.gate,
                    lambda stop: self.pipeline.run(
                        model, audio, options, task=task, known_speakers=known_speakers, cancel=cancel or stop,
                        report=self.metrics.hallucination_suppressed, priority=priority,
                    ),
                    request,
                )
            finally:
                stream.close()
            self._record(model_id, result.transcript.duration, result, time.perf_counter() - started)
            if progress is not None:
                progress(result.transcript.duration, result.transcript.duration)
            return result

    def _open(self, source: AudioSource) -> tuple[AudioStream, Iterator[np.ndarray]]:
        """The audio stream, and its blocks with the first already decoded (so a file with no audio fails here)."""
        audio = AudioStream(_readable(source), max_seconds=self.settings.max_audio_seconds)
        try:
            blocks = audio.blocks()
            first = next(blocks)
        except BaseException:
            audio.close()
            raise
        return audio, itertools.chain([first], blocks)

    def _decode(self, source: AudioSource) -> DecodedAudio:
        return decode_audio(_readable(source), max_seconds=self.settings.max_audio_seconds)

    def _record(self, model_id: str, duration: float, result: PipelineResult, seconds: float) -> None:
        self.metrics.record_inference(
            model_id,
            result.transcript.task,
            duration,
            seconds,
            alignment=result.alignment,
            diarization=result.diarization,
            segments=len(result.transcript.segments),
        )


def _readable(source: AudioSource) -> BinaryIO | str:
    if isinstance(source, Path):
        return str(source)
    if not isinstance(source, str):
        source.seek(0)
    return source

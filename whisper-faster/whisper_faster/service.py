"""A file's transcription below the route, for the synchronous routes, SSE streaming and jobs alike: the English-only
check, admission (gate), the model (manager), audio decoding and faster-whisper in worker threads, and the metrics.

    transcript = await service.transcribe_file(source, options, progress, cancel, request=request)  # all at once
    async with service.open_file(source, options, request=request) as decoding:                    # as they come
        async for segment in decoding.stream(): ...

Everything that can fail before the first segment (busy, unknown model, English-only, bad audio) fails in `open_file`,
so a stream can still answer it as a plain JSON error. `Decoding.segments` is the one place where a file's audio
becomes segments: the hallucination guard (whisper_common.speech_guard) checks them there, and a batch scheduler goes
there."""
from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from starlette.requests import Request

from whisper_common.concurrency import InferenceGate, iterate_in_worker, run_in_worker
from whisper_common.jobs.engine import ProgressCallback
from whisper_common.metrics import ServiceMetrics
from whisper_common.model_catalog import resolve_model_id
from whisper_common.models import ModelManager
from whisper_common.options import check_model_supports
from whisper_common.speech_guard import SegmentGuard
from whisper_common.transcript import Segment, Task, Transcript
from whisper_common.uploads import DecodedAudio, decode_audio
from whisper_faster.engine import SegmentStream
from whisper_faster.models import LoadedModel
from whisper_faster.options import FasterOptions
from whisper_faster.settings import Settings

AudioSource = BinaryIO | Path | str
"""An upload's file object, or the path of a stored one (a job's audio)."""


@dataclass
class TranscriptionService:
    settings: Settings
    manager: ModelManager[LoadedModel]
    gate: InferenceGate
    metrics: ServiceMetrics

    def model_id(self, options: FasterOptions, task: Task) -> str:
        """The canonical model id, refused (400) when its name says it cannot do `task` in the asked language."""
        model_id = resolve_model_id(options.model, self.settings)
        check_model_supports(model_id, task, options.language)
        return model_id

    async def transcribe_file(
        self,
        source: AudioSource,
        options: FasterOptions,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        *,
        task: Task = "transcribe",
        request: Request | None = None,
    ) -> Transcript:
        """The whole transcript. It stops at the next segment, with what it has, when `cancel` is set or `request`'s
        client goes away (then ClientDisconnected)."""
        async with self.open_file(source, options, task=task, request=request) as decoding:
            return await decoding.transcript(progress, cancel)

    @asynccontextmanager
    async def open_file(
        self, source: AudioSource, options: FasterOptions, *, task: Task = "transcribe", request: Request | None = None
    ) -> AsyncIterator[Decoding]:
        """Hold a slot and the model, with the audio decoded, while the caller takes the segments."""
        model_id = self.model_id(options, task)
        async with self.gate.slot(request), self.manager.use(model_id) as model:
            check_model_supports(model_id, task, options.language, model)
            audio = await run_in_worker(self.gate, lambda _: self._decode(source), request)
            yield Decoding(self, model, audio, options, task, request)

    def _decode(self, source: AudioSource) -> DecodedAudio:
        if isinstance(source, Path):
            source = str(source)
        elif not isinstance(source, str):
            source.seek(0)
        return decode_audio(source, max_seconds=self.settings.max_audio_seconds)


@dataclass
class Decoding:
    """An admitted file, its model and its decoded audio: segments all at once (`transcript`) or as they come
    (`stream`), each in the gate's worker threads."""

    service: TranscriptionService
    model: LoadedModel
    audio: DecodedAudio
    options: FasterOptions
    task: Task
    request: Request | None
    language: str = "en"
    guard: SegmentGuard | None = None

    def segments(self, cancel: threading.Event, progress: ProgressCallback | None = None) -> Iterator[Segment]:
        """The file's segments as faster-whisper decodes them (in a worker thread), through the hallucination guard
        unless the request opted out (`hallucination_guard=false`); stops when `cancel` is set.

        With the guard, faster-whisper decodes only what its Silero VAD finds to be speech (`vad_filter`): audio
        without speech is not decoded at all. Segments the guard drops leave no gap in the ids."""
        stream = SegmentStream(self.model, self.audio.samples, self.options, self.task, cancel)
        self.language = stream.info.language
        duration = self.audio.duration
        if self.options.hallucination_guard:
            self.guard = SegmentGuard(self.service.metrics.hallucination_suppressed, duration=duration,
                                      language=stream.info.language)
            if duration > 0 and stream.info.duration_after_vad == 0:
                self.guard.no_speech()
        kept = 0
        try:
            for decoded in stream:
                if progress is not None:
                    progress(min(decoded.end, duration), duration)
                segment = decoded if self.guard is None else self.guard.check(decoded)
                if segment is None:
                    continue
                segment.id = kept
                kept += 1
                yield segment
        finally:
            stream.close()

    async def transcript(
        self, progress: ProgressCallback | None = None, cancel: threading.Event | None = None
    ) -> Transcript:
        """Every segment, in one worker call (so a client that leaves stops it at the next segment)."""
        if progress is not None:
            progress(0.0, self.audio.duration)
        started = time.perf_counter()
        segments = await run_in_worker(
            self.service.gate, lambda stop: list(self.segments(cancel or stop, progress)), self.request
        )
        self._record(started)
        return Transcript(language=self.language, duration=self.audio.duration, segments=segments, task=self.task)

    async def stream(self) -> AsyncIterator[Segment]:
        """Segments as they are decoded; closing the iterator stops the worker at its next segment."""
        started = time.perf_counter()
        async for segment in iterate_in_worker(self.service.gate, self.segments):
            yield segment
        self._record(started)

    def _record(self, started: float) -> None:
        suppressed = dict(self.guard.suppressed) if self.guard is not None and self.guard.suppressed else {}
        self.service.metrics.record_inference(
            self.model.model_id, self.task, self.audio.duration, time.perf_counter() - started,
            **({"hallucinations_suppressed": suppressed} if suppressed else {}),
        )

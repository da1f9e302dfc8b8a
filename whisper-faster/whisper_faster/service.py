"""A file's transcription below the route, for the synchronous routes, SSE streaming and jobs alike: the English-only
check, admission (gate), the model (manager), audio decoding and faster-whisper in worker threads, and the metrics.

    transcript = await service.transcribe_file(source, options, progress, cancel, request=request)  # all at once
    async with service.open_file(source, options, request=request) as decoding:                    # as they come
        async for segment in decoding.stream(): ...

What can fail before the first segment (busy, unknown model, English-only, not audio) fails in `open_file`, so a
stream can still answer it as a plain JSON error; a file found broken further on (truncated, undecodable from some
point) fails where it is found. `Decoding.segments` is the one place where a file's audio becomes segments: the audio
streams from the file in windows of at most 30 s cut at silences, and each window is decoded by faster-whisper with its
CTranslate2 calls batched with other requests' (whisper_common.batching), a few windows of a file at a time, in the
request's priority (synchronous requests before jobs); the hallucination guard (whisper_common.speech_guard) checks
the segments there."""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from faster_whisper.vad import VadOptions
from starlette.requests import Request

from whisper_common.audio_stream import AudioStream
from whisper_common.batching import Cancelled, Priority
from whisper_common.batching.recording import RecordingInfo
from whisper_common.batching.runtime import Batching
from whisper_common.concurrency import InferenceGate, iterate_in_worker, run_in_worker
from whisper_common.jobs.contract import ProgressCallback
from whisper_common.metrics import ServiceMetrics
from whisper_common.model_manager import ModelManager
from whisper_common.options import check_model_supports, checked_model_id
from whisper_common.speech_gate import RENEW_SECONDS, GateOptions
from whisper_common.speech_guard import SegmentGuard
from whisper_common.transcript import Segment, Task, Transcript
from whisper_faster.engine import convert_segment
from whisper_faster.models import LoadedModel
from whisper_faster.options import FasterOptions
from whisper_faster.settings import Settings

AudioSource = BinaryIO | Path | str
"""An upload's file object, or the path of a stored one (a job's audio)."""
_GATE = GateOptions()
GATE_VAD = VadOptions(threshold=_GATE.threshold, min_silence_duration_ms=_GATE.min_silence_ms, speech_pad_ms=_GATE.speech_pad_ms)
"""The speech gate's regions as faster-whisper's VadOptions (the windows split any region over 30 s)."""


@dataclass
class TranscriptionService:
    settings: Settings
    manager: ModelManager[LoadedModel]
    gate: InferenceGate
    metrics: ServiceMetrics
    batching: Batching

    def model_id(self, options: FasterOptions, task: Task) -> str:
        """The canonical model id, refused (400) when its name says it cannot do `task` in the asked language."""
        return checked_model_id(options.model, options.language, self.settings, task)

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
        """Hold a slot and the model, with the audio opened (its first block decoded), while the caller takes the
        segments. A request's windows go before a job's (no request: a job)."""
        model_id = self.model_id(options, task)
        async with self.gate.slot(request), self.manager.use(model_id) as model:
            check_model_supports(model_id, task, options.language, model)
            audio, blocks = await run_in_worker(self.gate, lambda _: self._open(source), request)
            priority = Priority.SYNC if request is not None else Priority.JOB
            try:
                yield Decoding(self, model, audio, blocks, options, task, request, priority)
            finally:
                audio.close()

    def _open(self, source: AudioSource) -> tuple[AudioStream, Iterator[np.ndarray]]:
        """The audio stream, and its blocks with the first already decoded (so a file with no audio fails here)."""
        if isinstance(source, Path):
            source = str(source)
        elif not isinstance(source, str):
            source.seek(0)
        audio = AudioStream(source, max_seconds=self.settings.max_audio_seconds)
        try:
            blocks = audio.blocks()
            first = next(blocks)
        except BaseException:
            audio.close()
            raise
        return audio, itertools.chain([first], blocks)


@dataclass
class Decoding:
    """An admitted file, its model and its audio stream: segments all at once (`transcript`) or as they come
    (`stream`), each in the gate's worker threads."""

    service: TranscriptionService
    model: LoadedModel
    audio: AudioStream
    blocks: Iterator[np.ndarray]
    options: FasterOptions
    task: Task
    request: Request | None
    priority: Priority = Priority.SYNC
    language: str = "en"
    guard: SegmentGuard | None = None
    info: RecordingInfo = field(default_factory=RecordingInfo)

    @property
    def duration(self) -> float:
        """The audio decoded so far (all of it once the segments are done)."""
        return self.audio.decoded_seconds

    def segments(self, cancel: threading.Event, progress: ProgressCallback | None = None) -> Iterator[Segment]:
        """The file's segments as its windows are decoded (in a worker thread), through the hallucination guard
        unless the request opted out (`hallucination_guard=false`); stops when `cancel` is set.

        With the guard, only what the Silero VAD finds to be speech is decoded (`vad_filter`): audio without speech is
        not decoded at all. Segments the guard drops leave no gap in the ids."""
        kwargs = self.options.transcribe_kwargs(self.task)
        speech_only = bool(kwargs.pop("vad_filter", False))
        # The guard's speech gate: faster-whisper's VAD rule with Silero's state renewed (whisper_common.speech_gate).
        gate = {"vad": GATE_VAD, "renew_seconds": RENEW_SECONDS} if self.options.hallucination_guard else {}
        batching = self.service.batching
        total = self.audio.declared_seconds
        kept = 0
        with batching.scheduler.opened(self.priority, label=self.model.model_id) as stream:
            decoded = batching.decoder.transcribe(
                self.model.whisper, stream, self.blocks, kwargs, cancel=cancel, speech_only=speech_only, info=self.info,
                **gate,
            )
            try:
                for index, segment in enumerate(decoded):
                    converted = convert_segment(segment, index)
                    if progress is not None:
                        known = max(total or 0.0, self.duration)
                        progress(min(converted.end, known), known)
                    checked = self._guarded(converted)
                    if checked is None:
                        continue
                    checked.id = kept
                    kept += 1
                    yield checked
            except Cancelled:
                return
            finally:
                decoded.close()
        self.language = self.info.language or self.language
        if self.options.hallucination_guard and self.info.windows == 0 and not cancel.is_set():
            self._guard().no_speech()  # the VAD found no speech: nothing was decoded

    def _guarded(self, segment: Segment) -> Segment | None:
        if not self.options.hallucination_guard:
            return segment
        guard = self._guard()
        guard.duration = max(self.audio.declared_seconds or 0.0, self.duration)
        return guard.check(segment)

    def _guard(self) -> SegmentGuard:
        if self.guard is None:
            self.guard = SegmentGuard(self.service.metrics.hallucination_suppressed, language=self.info.language)
        return self.guard

    async def transcript(
        self, progress: ProgressCallback | None = None, cancel: threading.Event | None = None
    ) -> Transcript:
        """Every segment, in one worker call (so a client that leaves stops it at the next segment)."""
        if progress is not None:
            progress(0.0, self.audio.declared_seconds or 0.0)
        started = time.perf_counter()
        segments = await run_in_worker(
            self.service.gate, lambda stop: list(self.segments(cancel or stop, progress)), self.request
        )
        self._record(started)
        return Transcript(language=self.language, duration=self.duration, segments=segments, task=self.task)

    async def stream(self) -> AsyncIterator[Segment]:
        """Segments as they are decoded; closing the iterator stops the worker at its next segment."""
        started = time.perf_counter()
        async for segment in iterate_in_worker(self.service.gate, self.segments):
            yield segment
        self._record(started)

    def _record(self, started: float) -> None:
        suppressed = dict(self.guard.suppressed) if self.guard is not None and self.guard.suppressed else {}
        self.service.metrics.record_inference(
            self.model.model_id, self.task, self.duration, time.perf_counter() - started,
            **({"hallucinations_suppressed": suppressed} if suppressed else {}),
        )

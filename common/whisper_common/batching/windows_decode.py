"""A recording decoded window by window (whisper_common.windows) with faster-whisper's own decoding, a bounded number of
windows in flight per request, results in window order.

    for window, segments in ordered(windows, decode_one, in_flight=4, executor=pool, cancel=event): ...
    transcribe_window(model, window, **transcribe_kwargs)        # WhisperModel.transcribe on one window (sequential)
    decode_speech_windows(model, windows, tokenizer, options)     # BatchedInferencePipeline.forward on a group

`model` is a request's WhisperModel whose CTranslate2 calls go through the batch scheduler
(`ctranslate2_ops.request_model`), so windows of every request in flight share batches. Times come back in the
recording's timeline: a window's offset added, or, for windows of speech joined without the silence between, each time
mapped to the clip it falls in (faster-whisper's `restore_speech_timestamps` rule: a word's start and end map through
the clip of its middle).
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import numpy as np

from whisper_common.batching.scheduler import Cancelled
from whisper_common.windows import AudioWindow

W = TypeVar("W")
R = TypeVar("R")
_POLL_SECONDS = 0.1


def ordered(
    windows: Iterable[W],
    decode: Callable[[W], R],
    *,
    in_flight: int,
    executor: Executor,
    cancel: threading.Event,
) -> Iterator[tuple[W, R]]:
    """Decode up to `in_flight` windows at once on `executor`; yield (window, result) in window order. Reading the
    next window (decoding its audio) happens here, while earlier windows decode. The first window decodes alone, so its
    result (a stream's first text) comes as early as it can; then up to `in_flight`. A failure reading the windows
    (audio that stops decoding) is raised after the results of the windows read before it. Stops with Cancelled when
    `cancel` is set; closing the iterator abandons the windows still in flight (their ops fail once the caller cancels
    its scheduler stream)."""
    pending: deque[tuple[W, Future[R]]] = deque()
    source = iter(windows)
    exhausted = False
    failure: BaseException | None = None
    yielded = 0
    try:
        while True:
            limit = in_flight if yielded else 1
            while not exhausted and len(pending) < limit:
                if cancel.is_set():
                    raise Cancelled()
                try:
                    window = next(source)
                except StopIteration:
                    exhausted = True
                    break
                except Exception as exc:  # noqa: BLE001 - raised once the windows read before it are given
                    failure, exhausted = exc, True
                    break
                pending.append((window, executor.submit(decode, window)))
            if not pending:
                if failure is not None:
                    raise failure
                return
            window, future = pending.popleft()
            yield window, _result(future, cancel)
            yielded += 1
    finally:
        for _, future in pending:
            future.cancel()


def _result(future: Future[R], cancel: threading.Event) -> R:
    while True:
        if cancel.is_set():
            future.cancel()
            raise Cancelled()
        try:
            return future.result(timeout=_POLL_SECONDS)
        except FutureTimeout:
            continue


def transcribe_window(model: Any, window: AudioWindow, **kwargs: Any) -> list[Any]:
    """faster-whisper's sequential decoding (WhisperModel.transcribe: seek, temperature fallback, no-speech rule,
    word timings) of one window, its segments in the recording's timeline. A window is decoded as a whole recording
    would be, except that a re-decode after an unfinished last segment is not prompted with the window's earlier text
    (`condition_on_previous_text`), so that it has the same prompt as other windows' decodes and can share their
    batch (windows themselves are independent of each other)."""
    segments, _ = model.transcribe(window.samples, vad_filter=False, **{"condition_on_previous_text": False, **kwargs})
    return [restore(segment, window) for segment in segments]


def restore(segment: Any, window: AudioWindow) -> Any:
    """A faster-whisper Segment with window times, in the recording's timeline (mutated, returned)."""
    if len(window.clips) == 1:
        offset = window.start
        segment.start = round(segment.start + offset, 3)
        segment.end = round(segment.end + offset, 3)
        for word in segment.words or ():
            word.start = round(word.start + offset, 3)
            word.end = round(word.end + offset, 3)
        segment.seek = int(segment.seek + round(offset * 100))
        return segment
    if segment.words:
        for word in segment.words:
            clip = window.clip_index((word.start + word.end) / 2)
            word.start = window.original_time(word.start, clip)
            word.end = window.original_time(word.end, clip)
        segment.start, segment.end = segment.words[0].start, segment.words[-1].end
    else:
        segment.start = window.original_time(segment.start)
        segment.end = window.original_time(segment.end, is_end=True)
    return segment


def decode_speech_windows(
    model: Any, windows: list[AudioWindow], tokenizer: Any, options: Any
) -> list[list[dict[str, Any]]]:
    """faster-whisper's batched pipeline step (`BatchedInferencePipeline.forward`) on a group of windows of speech:
    per window its segments (dicts with start, end, text, tokens, words...) in the recording's timeline."""
    from faster_whisper import BatchedInferencePipeline
    from faster_whisper.audio import pad_or_trim

    pipeline = BatchedInferencePipeline(model)
    features = np.stack([pad_or_trim(model.feature_extractor(window.samples)[..., :-1]) for window in windows])
    metadata = [{"offset": 0.0, "duration": window.duration, "segments": []} for window in windows]
    outputs = pipeline.forward(features, tokenizer, metadata, options)
    restored = []
    for window, segments in zip(windows, outputs):
        for segment in segments:
            words = segment.get("words")
            if words:
                for word in words:
                    clip = window.clip_index((word["start"] + word["end"]) / 2)
                    word["start"] = window.original_time(word["start"], clip)
                    word["end"] = window.original_time(word["end"], clip)
                segment["start"], segment["end"] = words[0]["start"], words[-1]["end"]
            else:
                segment["start"] = window.original_time(segment["start"])
                segment["end"] = window.original_time(segment["end"], is_end=True)
        restored.append(segments)
    return restored

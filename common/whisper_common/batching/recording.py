"""A whole recording transcribed through the batch scheduler, in bounded memory: its audio streamed
(whisper_common.audio_stream), cut into windows at silences (whisper_common.windows), each window decoded by
faster-whisper's own code on a request model whose CTranslate2 calls are the stream's ops, segments in order.

    decoder = RecordingDecoder(scheduler, executor, in_flight=4)
    with scheduler.opened(Priority.SYNC) as stream:
        for segment in decoder.transcribe(whisper_model, stream, audio.blocks(), kwargs, cancel=cancel): ...  # sequential
        for window, segments in decoder.decode_speech(whisper_model, stream, audio.blocks(), ...): ...        # batched

- `transcribe`: WhisperModel.transcribe on each window (seek, temperature fallback, the no-speech rule, word timings),
  whisper-faster's decoding. Windows are independent (each gets the request's prompt, as in faster-whisper's batched
  pipeline), so up to `in_flight` of one request decode at once. Without a language on a multilingual model, the
  first window's language is detected first and used for every window (as faster-whisper detects it on the first
  30 s).
- `decode_speech`: BatchedInferencePipeline.forward on groups of windows of speech (silence left out), whisperx's
  decoding; a group is one op of `len(group)` rows.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_whisper.vad import VadOptions

from whisper_common.batching.ctranslate2_ops import request_model
from whisper_common.batching.scheduler import BatchScheduler, Stream
from whisper_common.batching.windows_decode import decode_speech_windows, ordered, transcribe_window
from whisper_common.windows import AudioWindow, Windower

FULL_WINDOW_VAD = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
"""Where windows are cut when every sample is decoded: faster-whisper's batched pipeline's VAD defaults."""


@dataclass
class RecordingInfo:
    """What a transcription learns as it goes: the language used (detected or asked) and the windows decoded."""

    language: str | None = None
    windows: int = 0


@dataclass
class RecordingDecoder:
    scheduler: BatchScheduler
    executor: Executor
    in_flight: int = 4

    def transcribe(
        self,
        whisper_model: Any,
        stream: Stream,
        blocks: Iterable[np.ndarray],
        kwargs: dict[str, Any],
        *,
        cancel: threading.Event,
        speech_only: bool = False,
        vad: VadOptions | None = None,
        renew_seconds: float | None = None,
        info: RecordingInfo | None = None,
    ) -> Iterator[Any]:
        """faster-whisper Segments in the recording's timeline; `info` gets the language (before the first segment)
        and the count of windows. `speech_only`: only the speech is decoded (`vad`, by default faster-whisper's
        `vad_filter` options; `renew_seconds` as in whisper_common.windows)."""
        info = info if info is not None else RecordingInfo()
        model = request_model(whisper_model, stream)
        options = vad or (VadOptions() if speech_only else FULL_WINDOW_VAD)
        windower = Windower(options, speech_only=speech_only, renew_seconds=renew_seconds)
        windows: Iterator[AudioWindow] = windower.windows(blocks)
        language = kwargs.get("language")
        if language is None:
            if not whisper_model.model.is_multilingual:
                language = "en"
            else:
                first = next(windows, None)
                if first is None:
                    return
                language = model.detect_language(audio=first.samples)[0]
                windows = itertools.chain([first], windows)
        info.language = language
        arguments = {**kwargs, "language": language}

        def decode(window: AudioWindow) -> list[Any]:
            return transcribe_window(model, window, **arguments)

        for _, segments in ordered(windows, decode, in_flight=self.in_flight, executor=self.executor, cancel=cancel):
            info.windows += 1
            yield from segments

    def decode_speech(
        self,
        whisper_model: Any,
        stream: Stream,
        blocks: Iterable[np.ndarray],
        *,
        vad: VadOptions,
        tokenizer_for: Any,
        options: Any,
        group: int,
        cancel: threading.Event,
        renew_seconds: float | None = None,
        unheard: Callable[[AudioWindow, list[dict[str, Any]]], list[AudioWindow]] | None = None,
    ) -> Iterator[tuple[AudioWindow, list[dict[str, Any]]]]:
        """Per window of speech, its segments (dicts, as BatchedInferencePipeline.forward makes them). `tokenizer_for`
        (first window's samples, model) -> the Tokenizer (detecting the language when it must). `unheard` (a window,
        its segments) -> the parts of its speech the decoding left out (AudioWindow.unheard): each is decoded once more
        on its own, in one op for the group, and its segments join the window's, in time order."""
        model = request_model(whisper_model, stream)
        windows = Windower(vad, speech_only=True, renew_seconds=renew_seconds).windows(blocks)
        first = next(windows, None)
        if first is None:
            return
        tokenizer = tokenizer_for(first.samples, model)
        groups = _groups(itertools.chain([first], windows), group)

        def decode(windows_of_group: list[AudioWindow]) -> list[list[dict[str, Any]]]:
            outputs = decode_speech_windows(model, windows_of_group, tokenizer, options)
            if unheard is None:
                return outputs
            again = [(index, part) for index, (window, segments) in enumerate(zip(windows_of_group, outputs))
                     for part in unheard(window, segments)]
            if again:
                parts = decode_speech_windows(model, [part for _, part in again], tokenizer, options)
                for (index, _), segments in zip(again, parts):
                    outputs[index] = sorted(outputs[index] + segments, key=lambda segment: segment["start"])
            return outputs

        for windows_of_group, outputs in ordered(groups, decode, in_flight=1, executor=self.executor, cancel=cancel):
            yield from zip(windows_of_group, outputs)


def _groups(windows: Iterable[AudioWindow], size: int) -> Iterator[list[AudioWindow]]:
    group: list[AudioWindow] = []
    for window in windows:
        group.append(window)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group

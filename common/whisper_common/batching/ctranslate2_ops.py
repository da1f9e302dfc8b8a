"""CTranslate2's Whisper calls as scheduler ops, so faster-whisper's own decoding code batches across requests.

    scheduler = BatchScheduler(run_whisper_ops, batch_size=8, max_wait=0.02, op_name=op_name)
    with scheduler.opened(Priority.SYNC) as stream:
        shell = request_model(whisper_model, stream)        # a WhisperModel whose `.model` is a BatchedWhisper
        segments, info = shell.transcribe(window_samples, ...)   # faster-whisper's code; its encode, generate,
                                                                  # align and detect_language calls are ops

`BatchedWhisper` stands where faster-whisper expects a `ctranslate2.models.Whisper`: each call becomes an op whose key
says which calls can share one CTranslate2 call (the same model and input shape to encode; the same model, decoding
options and prompt layout to generate, as CTranslate2 needs `<|startoftranscript|>` at one position and as many
tokens after it in every prompt of a batch; the same start sequence to align). `run_whisper_ops` merges the ops of a batch along the batch dimension, makes the one
call, and splits the results. A call of several rows (whisperx decodes a group of windows in one) becomes one op per
row, which the scheduler merges back into one batch unless a newer request should go between them (see the scheduler's
long streams). Encoder outputs travel as host arrays (CTranslate2 returns them to the CPU), so the
outputs of different requests can be stacked.
"""
from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from whisper_common.batching.scheduler import Stream


@dataclass(frozen=True)
class EncodeKey:
    model: Any  # the ctranslate2.models.Whisper (hashed by identity)
    shape: tuple[int, ...]


@dataclass(frozen=True)
class GenerateKey:
    model: Any
    shape: tuple[int, ...]
    layout: tuple[int, int]  # tokens before and after <|startoftranscript|>
    options: tuple[tuple[str, Hashable], ...]


@dataclass(frozen=True)
class AlignKey:
    model: Any
    shape: tuple[int, ...]
    start_sequence: tuple[int, ...]
    options: tuple[tuple[str, Hashable], ...]


@dataclass(frozen=True)
class DetectKey:
    model: Any
    shape: tuple[int, ...]


OP_NAMES = {EncodeKey: "encode", GenerateKey: "generate", AlignKey: "align", DetectKey: "detect_language"}


def op_name(key: Hashable) -> str:
    return OP_NAMES.get(type(key), type(key).__name__)


def _frozen(value: Any) -> Hashable:
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((name, _frozen(item)) for name, item in value.items()))
    return value  # type: ignore[no-any-return]


def _options(kwargs: dict[str, Any]) -> tuple[tuple[str, Hashable], ...]:
    return tuple(sorted((name, _frozen(value)) for name, value in kwargs.items()))


def host_array(features: Any) -> np.ndarray:
    """A StorageView (on the CPU) or an array as a float32 numpy array."""
    if isinstance(features, np.ndarray):
        return features
    if getattr(features, "device", "cpu") != "cpu":
        import ctranslate2

        features = features.to_device(ctranslate2.Device.cpu)
    return np.asarray(features)


def _storage(array: np.ndarray) -> Any:
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array))


class BatchedWhisper:
    """What a request's faster-whisper code calls instead of the model: every inference call goes through `stream`."""

    def __init__(self, model: Any, stream: Stream, sot_token: int) -> None:
        self._model = model
        self.stream = stream
        self._sot = sot_token

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        array = host_array(features)
        return _storage(np.stack(self._by_row(EncodeKey(self._model, array.shape[1:]), _rows(array))))

    def generate(self, features: Any, prompts: Sequence[Sequence[int]], **kwargs: Any) -> list[Any]:
        array = host_array(features)
        key = GenerateKey(self._model, array.shape[1:], self._layout(prompts), _options(kwargs))
        return self._by_row(key, [(row, [list(prompt)], kwargs) for row, prompt in zip(_rows(array), prompts, strict=True)])

    def align(
        self, features: Any, start_sequence: Sequence[int], text_tokens: Sequence[Sequence[int]], num_frames: Any, **kwargs: Any
    ) -> list[Any]:
        array = host_array(features)
        frames = list(num_frames) if isinstance(num_frames, list | tuple) else [int(num_frames)] * len(array)
        key = AlignKey(self._model, array.shape[1:], tuple(start_sequence), _options(kwargs))
        payloads = [(row, [list(tokens)], [frame], list(start_sequence), kwargs)
                    for row, tokens, frame in zip(_rows(array), text_tokens, frames, strict=True)]
        return self._by_row(key, payloads)

    def detect_language(self, features: Any) -> list[Any]:
        array = host_array(features)
        return self._by_row(DetectKey(self._model, array.shape[1:]), _rows(array))

    def _by_row(self, key: Hashable, payloads: list[Any]) -> list[Any]:
        """One op per row, queued at once (so they still run as one batch); each op's one result, in row order."""
        return [result for future in self.stream.submit_all(key, payloads) for result in future.result()]

    def _layout(self, prompts: Sequence[Sequence[int]]) -> tuple[int, int]:
        """Tokens before and after <|startoftranscript|>: CTranslate2 batches only prompts that agree on both."""
        layouts = set()
        for prompt in prompts:
            position = list(prompt).index(self._sot) if self._sot in prompt else 0
            layouts.add((position, len(prompt) - position))
        return layouts.pop() if len(layouts) == 1 else (-1, -1)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def _rows(array: np.ndarray) -> list[np.ndarray]:
    """The rows of a batch, each still a batch (of one)."""
    return [array[row : row + 1] for row in range(len(array))]


def request_model(whisper_model: Any, stream: Stream) -> Any:
    """A shallow copy of a faster_whisper.WhisperModel whose CTranslate2 calls go through `stream`."""
    shell = copy.copy(whisper_model)
    sot = whisper_model.hf_tokenizer.token_to_id("<|startoftranscript|>")
    shell.model = BatchedWhisper(whisper_model.model, stream, sot)
    return shell


def _split(results: Sequence[Any], rows: Sequence[int]) -> list[Any]:
    out, start = [], 0
    for count in rows:
        out.append(list(results[start : start + count]))
        start += count
    return out


def run_whisper_ops(key: Hashable, payloads: list[Any]) -> list[Any]:
    """The scheduler's runner: one CTranslate2 call for a batch of ops with the same key."""
    if isinstance(key, EncodeKey):
        arrays = payloads
        stacked = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        encoded = host_array(key.model.encode(_storage(stacked), to_cpu=True))
        rows = [len(array) for array in arrays]
        bounds = np.cumsum([0, *rows])
        return [encoded[bounds[i] : bounds[i + 1]] for i in range(len(arrays))]
    if isinstance(key, GenerateKey):
        arrays = [payload[0] for payload in payloads]
        prompts = [prompt for payload in payloads for prompt in payload[1]]
        stacked = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        results = key.model.generate(_storage(stacked), prompts, **payloads[0][2])
        return _split(results, [len(array) for array in arrays])
    if isinstance(key, AlignKey):
        arrays = [payload[0] for payload in payloads]
        tokens = [item for payload in payloads for item in payload[1]]
        frames = [item for payload in payloads for item in payload[2]]
        stacked = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        results = key.model.align(_storage(stacked), payloads[0][3], tokens, frames, **payloads[0][4])
        return _split(results, [len(array) for array in arrays])
    if isinstance(key, DetectKey):
        stacked = payloads[0] if len(payloads) == 1 else np.concatenate(payloads)
        results = key.model.detect_language(_storage(stacked))
        return _split(results, [len(array) for array in payloads])
    raise TypeError(f"not a Whisper op: {key!r}")

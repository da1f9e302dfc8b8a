"""Word timings: WhisperX's wav2vec2 forced alignment when its model loads, else the cross-attention timings
faster-whisper computed while decoding (snapped to where the speech energy starts and stops).

Both produce WhisperX-shaped segments (`{"start", "end", "text", "words": [{"word", "start", "end", "score"}]}`)
and every word gets a start and an end, numbers and symbols included (wav2vec2 has no characters for "1963" or
"%", so such words are timed from their neighbours).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np

from whisper_common.errors import ApiError
from whisperx_api.settings import AlignmentSettings

logger = logging.getLogger("whisperx_api.align")

SAMPLE_RATE = 16000
WAV2VEC2 = "wav2vec2"
CROSS_ATTENTION = "whisper-cross-attention"
_FRAME = 160  # 10 ms at 16 kHz
_MAX_SNAP_SECONDS = 0.25
_LONG_PAUSE_FRAMES = 15

Segments = list[dict[str, Any]]


class AlignmentUnavailable(ApiError):
    """ALIGNMENT__MODE=wav2vec2 and the alignment model for the language could not be loaded (503)."""

    status_code = 503
    error_type = "server_error"
    code = "alignment_model_unavailable"

    def __init__(self, language: str, reason: str) -> None:
        super().__init__(
            f"the wav2vec2 alignment model for language '{language}' could not be loaded ({reason}); "
            "set ALIGNMENT__MODE=auto to fall back to Whisper's own word timings",
            param="language",
        )


@dataclass
class _AlignState:
    model: Any = None
    metadata: dict[str, Any] | None = None
    failed_until: float = 0.0
    reason: str = ""
    loading: Future | None = None


class Wav2Vec2Models:
    """Alignment models per language: loaded once, a failed load remembered for `retry_seconds`, and a request
    never waits longer than `load_timeout_seconds` for a download (the download goes on in the background)."""

    def __init__(self, settings: AlignmentSettings, device: str) -> None:
        self.settings = settings
        self.device = device
        self._states: dict[str, _AlignState] = {}
        self._lock = threading.Lock()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="align-load")

    def put(self, language: str, model: Any, metadata: dict[str, Any]) -> None:
        """Use an alignment model loaded elsewhere (e.g. from a local checkpoint) for `language`."""
        with self._lock:
            self._states[language] = _AlignState(model=model, metadata=metadata)

    def get(self, language: str) -> tuple[Any, dict[str, Any]] | str:
        """The (model, metadata) pair, or why it is not available now."""
        with self._lock:
            state = self._states.setdefault(language, _AlignState())
            if state.model is not None:
                return state.model, state.metadata or {}
            if time.monotonic() < state.failed_until:
                return state.reason
            if state.loading is not None:
                return "the alignment model is still loading"  # only the request that started the load waits
            loading = state.loading = self._loader.submit(self._load, language, state)
        try:
            loading.result(timeout=self.settings.load_timeout_seconds)
        except FutureTimeout:
            return f"still loading after {self.settings.load_timeout_seconds:g} s"
        with self._lock:
            return (state.model, state.metadata or {}) if state.model is not None else state.reason

    def _load(self, language: str, state: _AlignState) -> None:
        try:
            if not self._obtainable():
                # Importing WhisperX's alignment stack (transformers, torchaudio pipelines) costs ~400 MB of RSS:
                # not worth it when no model is cached and no download host answers.
                raise ConnectionError("no wav2vec2 model is cached and the download hosts cannot be reached")
            import whisperx

            from whisperx_api.models import route_library_logs_to_root

            route_library_logs_to_root()
            model, metadata = whisperx.load_align_model(
                language, self.device, model_name=self.settings.model, model_dir=self.settings.model_dir
            )
        except Exception as exc:  # noqa: BLE001 - any failure means: use the fallback for a while
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            logger.warning("alignment model unavailable", extra={"language": language, "reason": reason})
            with self._lock:
                state.failed_until = time.monotonic() + self.settings.retry_seconds
                state.reason = reason
                state.loading = None
            return
        with self._lock:
            state.model, state.metadata, state.loading = model, metadata, None
        logger.info("alignment model loaded", extra={"language": language})

    def _obtainable(self) -> bool:
        return wav2vec2_cached(self.settings) or any_host_reachable(download_hosts())


def wav2vec2_cached(settings: AlignmentSettings) -> bool:
    """Is any wav2vec2 checkpoint in the torch hub cache, the Hugging Face cache or ALIGNMENT__MODEL_DIR?"""
    import glob
    import os

    from huggingface_hub import constants

    if settings.model and os.path.isdir(settings.model):
        return True
    patterns = [os.path.join(torch_hub_dir(), "checkpoints", "*wav2vec2*"), os.path.join(constants.HF_HUB_CACHE, "models--*")]
    if settings.model_dir:
        patterns += [os.path.join(settings.model_dir, "*wav2vec2*"), os.path.join(settings.model_dir, "models--*")]
    names = ["wav2vec2"] + ([settings.model.replace("/", "--").lower()] if settings.model else [])
    return any(name in path.lower() for pattern in patterns for path in glob.glob(pattern) for name in names)


def torch_hub_dir() -> str:
    """Where `torch.hub.get_dir()` points, without importing torch (~500 MB of RSS a request without speakers
    would otherwise pay for this one path): $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub."""
    import os

    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch"
    )
    return os.path.join(os.path.expanduser(torch_home), "hub")


def download_hosts() -> list[str]:
    from huggingface_hub import constants

    return ["https://download.pytorch.org", constants.ENDPOINT]


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Does a TCP connection to the URL's host open? (The timeout bounds the connect, not the DNS lookup.)"""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def any_host_reachable(urls: list[str], timeout: float = 3.0) -> bool:
    """Is any of the hosts reachable, answered within `timeout` in all? The hosts are tried at once, each in a
    daemon thread: a DNS lookup ignores socket timeouts, and where the resolver has no upstream (a container
    without internet) each lookup hung 10 s, which the first request after every wake used to wait for."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    answers: queue.SimpleQueue[bool] = queue.SimpleQueue()
    for url in urls:
        threading.Thread(target=lambda url=url: answers.put(host_reachable(url, timeout)), daemon=True).start()
    deadline = time.monotonic() + timeout
    for _ in urls:
        try:
            if answers.get(timeout=max(0.0, deadline - time.monotonic())):
                return True
        except queue.Empty:
            return False
    return False


class WordAligner:
    def __init__(self, settings: AlignmentSettings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.wav2vec2 = Wav2Vec2Models(settings, device)

    def align(
        self,
        audio: np.ndarray | Callable[[], np.ndarray],
        segments: Segments,
        language: str,
        levels: np.ndarray | None = None,
    ) -> tuple[Segments, str]:
        """Segments with timed words, and the name of the method that timed them. `segments` carry the words
        timed while decoding; wav2vec2 re-times them when its model is available. `audio` may be a callable that
        loads it (only wav2vec2 needs the samples: with `levels`, from `LevelMeter`, snapping does not)."""
        if self.settings.mode != "whisper":
            found = self.wav2vec2.get(language)
            if isinstance(found, tuple):
                aligned = self._wav2vec2(audio() if callable(audio) else audio, segments, *found)
                if aligned is not None:
                    return aligned, WAV2VEC2
                found = "the alignment itself failed"
            if self.settings.mode == "wav2vec2":
                raise AlignmentUnavailable(language, found)
        if levels is None:
            levels = frame_levels(audio() if callable(audio) else audio)
        voiced = voiced_from_levels(levels)
        for segment in segments:
            snap_to_speech(segment["words"], voiced)
            segment["start"], segment["end"] = segment["words"][0]["start"], segment["words"][-1]["end"]
        return segments, CROSS_ATTENTION

    def _wav2vec2(self, audio: np.ndarray, segments: Segments, align_model: Any, metadata: dict) -> Segments | None:
        import whisperx

        try:
            result = whisperx.align(segments, align_model, metadata, audio, self.device, return_char_alignments=False)
        except Exception as exc:  # noqa: BLE001 - e.g. the sentence splitter's data cannot be downloaded
            logger.warning("wav2vec2 alignment failed, using cross-attention", extra={"reason": repr(exc)[:200]})
            return None
        aligned = [segment for segment in result["segments"] if segment.get("words")]
        for segment in aligned:
            fill_missing_word_times(segment)
        return aligned


def fill_missing_word_times(segment: dict[str, Any]) -> None:
    """Words wav2vec2 could not align (digits, symbols) get the gap between their timed neighbours."""
    words = segment["words"]
    index = 0
    while index < len(words):
        if "start" in words[index] and "end" in words[index]:
            index += 1
            continue
        run_end = index
        while run_end < len(words) and not ("start" in words[run_end] and "end" in words[run_end]):
            run_end += 1
        gap_start = words[index - 1]["end"] if index > 0 else segment["start"]
        gap_end = words[run_end]["start"] if run_end < len(words) else segment["end"]
        gap_end = max(gap_end, gap_start)
        share = (gap_end - gap_start) / (run_end - index)
        for offset, word in enumerate(words[index:run_end]):
            word["start"] = round(gap_start + offset * share, 3)
            word["end"] = round(gap_start + (offset + 1) * share, 3)
            word.setdefault("score", 0.0)
        index = run_end


def voiced_frames(audio: np.ndarray) -> np.ndarray:
    """Per 10 ms frame: is there speech energy? The threshold adapts to the recording's noise floor and peak."""
    return voiced_from_levels(frame_levels(audio))


def frame_levels(audio: np.ndarray) -> np.ndarray:
    """The level (dB) of each whole 10 ms frame."""
    n_frames = len(audio) // _FRAME
    frames = audio[: n_frames * _FRAME].reshape(n_frames, _FRAME).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10) if n_frames else np.zeros(0)


class LevelMeter:
    """frame_levels of a recording fed block by block (what snapping needs, instead of the samples)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._rest = np.zeros(0, dtype=np.float32)

    def feed(self, block: np.ndarray) -> np.ndarray:
        data = np.concatenate([self._rest, block]) if self._rest.size else block
        whole = len(data) // _FRAME * _FRAME
        self._parts.append(frame_levels(data[:whole]))
        self._rest = data[whole:].copy()
        return block

    def levels(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros(0)


def voiced_from_levels(level: np.ndarray) -> np.ndarray:
    """voiced_frames from the frames' levels."""
    if level.size == 0:
        return np.zeros(0, dtype=bool)
    floor, peak = np.percentile(level, 10), np.percentile(level, 98)
    threshold = max(floor + 0.3 * (peak - floor), peak - 45.0)
    voiced = level > threshold
    # Close 30 ms dips inside a word (stop consonants) so a boundary is not snapped into one.
    return _close_gaps(voiced, 3)


def _first_long_pause(voiced: np.ndarray, start: int, end: int) -> int:
    """Where the first pause of _LONG_PAUSE_FRAMES or more inside [start, end) begins: a word has no such pause."""
    silent_run = 0
    for frame in range(start, end):
        silent_run = 0 if voiced[frame] else silent_run + 1
        if silent_run >= _LONG_PAUSE_FRAMES:
            return frame - silent_run + 1
    return end


def _close_gaps(voiced: np.ndarray, longest: int) -> np.ndarray:
    result = voiced.copy()
    index = 0
    n = len(voiced)
    while index < n:
        if result[index]:
            index += 1
            continue
        end = index
        while end < n and not result[end]:
            end += 1
        if 0 < index and end < n and end - index <= longest:
            result[index:end] = True
        index = end
    return result


def snap_to_speech(words: list[dict[str, Any]], voiced: np.ndarray) -> None:
    """Move each word's start to its speech onset and its end to its speech offset, within _MAX_SNAP_SECONDS,
    without crossing the neighbouring words."""
    limit = int(_MAX_SNAP_SECONDS * 100)
    n = len(voiced)
    previous_end = 0
    for index, word in enumerate(words):
        start = min(max(int(round(word["start"] * 100)), previous_end), n)
        end = min(max(int(round(word["end"] * 100)), start + 1), n)
        next_start = int(round(words[index + 1]["start"] * 100)) if index + 1 < len(words) else n
        inside = np.flatnonzero(voiced[start:end])
        if inside.size:
            if not voiced[start]:
                start = start + int(inside[0])
            else:
                while start > max(previous_end, start - limit) and start > 0 and voiced[start - 1]:
                    start -= 1
            end = min(end, _first_long_pause(voiced, start, end))
            if not voiced[end - 1]:
                end = start + int(np.flatnonzero(voiced[start:end])[-1]) + 1
            else:
                bound = min(n, end + limit, max(next_start, end))
                while end < bound and voiced[end]:
                    end += 1
        word["start"] = round(start / 100, 3)
        word["end"] = round(max(end, start + 1) / 100, 3)
        previous_end = end

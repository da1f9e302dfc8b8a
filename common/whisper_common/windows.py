"""A recording cut into windows of at most 30 s at silences, as its audio streams in, so it is transcribed window by
window in bounded memory and no word is cut in two at a seam.

    windower = Windower(VadOptions(), speech_only=False)
    for window in windower.windows(stream.blocks()):       # AudioWindow: samples, where they came from
        ... window.samples ... window.original_time(t) ...

Where speech is comes from the Silero VAD faster-whisper ships, computed block by block with its state carried over
(the probabilities are the same as over the whole file at once) or renewed every few seconds as the hallucination
guard's speech gate renews it (`renew_seconds`, whisper_common.speech_gate), and segmented by faster-whisper's own
rule (`get_speech_timestamps`), run incrementally: a speech region is final once the silence after it is long enough.
Regions are at most 30 s (faster-whisper's `max_speech_duration_s` split).

- `speech_only=True` (faster-whisper's batched pipeline, `vad_filter`): speech regions (each at most 30 s) are joined
  into windows of at most 30 s of speech, as `collect_chunks` joins them; the silence between them is not decoded.
- `speech_only=False` (every sample decoded, as `WhisperModel.transcribe` does without `vad_filter`): the timeline is
  cut into windows of at most 30 s, each cut in a silence between padded speech regions (at 30 s only when speech
  runs on longer than that), as late as 30 s allows. A recording that ends within the first 30 s is one window and costs no VAD.

The audio kept is the current window plus what the VAD has not settled yet (a few seconds past it).
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
from faster_whisper.vad import VadOptions, get_vad_model

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30.0
_FRAME = 512  # Silero's window
_CONTEXT = 64
_TIME_PRECISION = 2


@dataclass(frozen=True)
class AudioWindow:
    """Up to 30 s of a recording's audio and where each part of it came from (`clips`: sample ranges of the
    recording, in order; one range unless silence between speech regions was left out)."""

    index: int
    samples: np.ndarray
    clips: tuple[tuple[int, int], ...]
    sample_rate: int = SAMPLE_RATE
    last: bool = False

    @property
    def start(self) -> float:
        return self.clips[0][0] / self.sample_rate

    @property
    def end(self) -> float:
        return self.clips[-1][1] / self.sample_rate

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def clip_index(self, time: float, is_end: bool = False) -> int:
        """Which clip a time in the window falls in (faster-whisper's SpeechTimestampsMap rule)."""
        if len(self.clips) == 1:
            return 0
        ends = _cumulative_ends(self.clips)
        sample = int(time * self.sample_rate)
        if is_end and sample in ends:
            return ends.index(sample)
        return min(bisect.bisect(ends, sample), len(ends) - 1)

    def original_time(self, time: float, clip: int | None = None, is_end: bool = False) -> float:
        """A time in the window's samples as a time in the recording."""
        index = self.clip_index(time, is_end) if clip is None else clip
        before = sum(end - start for start, end in self.clips[:index])
        return round((self.clips[index][0] - before) / self.sample_rate + time, _TIME_PRECISION)

    def tail(self, from_seconds: float) -> AudioWindow:
        """The window's audio from `from_seconds` on (a re-decode of what a decoding left unfinished)."""
        cut = min(len(self.samples), max(0, int(round(from_seconds * self.sample_rate))))
        clips: list[tuple[int, int]] = []
        skipped = 0
        for start, end in self.clips:
            length = end - start
            if skipped + length <= cut:
                skipped += length
                continue
            clips.append((start + max(0, cut - skipped), end))
            skipped += length
        return replace(self, samples=self.samples[cut:], clips=tuple(clips) or ((self.clips[-1][1],) * 2,))

    def unheard(self, spans: Iterable[tuple[float, float]], min_seconds: float) -> list[AudioWindow]:
        """The runs of this window's clips that no span (a word's start and end, in the recording's timeline) touches,
        each run at least `min_seconds` long, as windows of their own (speech a decoding left out, to decode again)."""
        spans = sorted(spans)
        starts = [start for start, _ in spans]
        reach = np.maximum.accumulate([end for _, end in spans]) if spans else np.zeros(0)
        runs: list[list[int]] = [[]]
        for index, (start, end) in enumerate(self.clips):
            low, high = start / self.sample_rate, end / self.sample_rate
            first = int(np.searchsorted(reach, low, side="left"))  # the spans before it all end before the clip
            touched = first < len(spans) and starts[first] <= high  # the span at `first` ends at or after `low`
            if touched:
                runs.append([])
            else:
                runs[-1].append(index)
        offsets = [0, *_cumulative_ends(self.clips)]
        windows = []
        for run in runs:
            if not run or sum(self.clips[i][1] - self.clips[i][0] for i in run) < min_seconds * self.sample_rate:
                continue
            samples = np.concatenate([self.samples[offsets[i]:offsets[i + 1]] for i in run])
            windows.append(AudioWindow(self.index, samples, tuple(self.clips[i] for i in run), self.sample_rate))
        return windows


def _cumulative_ends(clips: tuple[tuple[int, int], ...]) -> list[int]:
    ends, total = [], 0
    for start, end in clips:
        total += end - start
        ends.append(total)
    return ends


# -- Silero VAD, block by block -----------------------------------------------------------------------------------


class StreamingVad:
    """Speech probabilities per 512-sample frame, fed any number of samples at a time; identical to
    faster_whisper.vad's over the whole file (its ONNX state and frame context are carried across calls), or, with
    `renew_seconds`, to the speech gate's (whisper_common.speech_gate: the state renewed every so many seconds)."""

    def __init__(self, renew_seconds: float | None = None) -> None:
        self._session = get_vad_model().session
        self._renew = None if renew_seconds is None else max(1, int(renew_seconds * SAMPLE_RATE) // _FRAME)
        self._frames = 0
        self._reset()
        self._rest = np.zeros(0, dtype=np.float32)
        self.samples_seen = 0

    def _reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(_CONTEXT, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        self.samples_seen += len(samples)
        data = np.concatenate([self._rest, samples]) if self._rest.size else samples
        whole = len(data) // _FRAME * _FRAME
        self._rest = data[whole:].copy()
        return self._run(data[:whole])

    def finish(self) -> np.ndarray:
        """The last frame, zero-padded (faster-whisper pads a whole frame when the length is a multiple of 512)."""
        tail = np.pad(self._rest, (0, _FRAME - len(self._rest)))
        self._rest = np.zeros(0, dtype=np.float32)
        return self._run(tail, last=True)

    def _run(self, data: np.ndarray, last: bool = False) -> np.ndarray:
        if data.size == 0:
            return np.zeros(0, dtype=np.float32)
        frames = data.reshape(-1, _FRAME).astype(np.float32, copy=True)
        if self._renew is None:
            return self._frames_run(frames, ends_call=last)
        outputs = []
        start = 0
        while start < len(frames):
            if self._frames % self._renew == 0:
                self._reset()
            count = min(len(frames) - start, self._renew - self._frames % self._renew)
            ends = last and start + count == len(frames) or (self._frames + count) % self._renew == 0
            outputs.append(self._frames_run(frames[start : start + count], ends_call=ends))
            start += count
        return np.concatenate(outputs)

    def _frames_run(self, frames: np.ndarray, ends_call: bool = False) -> np.ndarray:
        if ends_call:
            # faster_whisper.vad.SileroVADModel zeroes the last 64 samples of the last frame of each call (in place,
            # building the contexts): so must we, for the same probabilities
            frames[-1, -_CONTEXT:] = 0
        contexts = np.concatenate([self._context[None, :], frames[:-1, -_CONTEXT:]], axis=0)
        batch = np.concatenate([contexts, frames], axis=1)
        outputs = []
        for start in range(0, len(batch), 10_000):
            output, self._h, self._c = self._session.run(
                None, {"input": batch[start : start + 10_000], "h": self._h, "c": self._c}
            )
            outputs.append(np.asarray(output).reshape(-1))
        self._context = frames[-1, -_CONTEXT:].copy()
        self._frames += len(frames)
        return np.concatenate(outputs)


@dataclass
class SpeechRegion:
    start: int
    end: int


@dataclass
class SpeechTracker:
    """faster_whisper.vad.get_speech_timestamps, fed probabilities as they come: `regions` are the padded speech
    regions that are final (nothing later can change them); `settled` is the sample before which the speech layout
    is known."""

    options: VadOptions
    sample_rate: int = SAMPLE_RATE
    regions: list[SpeechRegion] = field(default_factory=list)
    _raw: list[SpeechRegion] = field(default_factory=list)  # found, padding not decided yet
    _previous_raw_end: int | None = None  # the raw end of the last region in `regions`
    _frame: int = 0
    _triggered: bool = False
    _current_start: int | None = None
    _temp_end: int = 0
    _prev_end: int = 0
    _next_start: int = 0
    _length: int | None = None

    def __post_init__(self) -> None:
        options, rate = self.options, self.sample_rate
        self._threshold = options.threshold
        self._neg_threshold = (
            options.neg_threshold if options.neg_threshold is not None else max(options.threshold - 0.15, 0.01)
        )
        self._min_speech = rate * options.min_speech_duration_ms / 1000
        self._pad = rate * options.speech_pad_ms / 1000
        self._max_speech = rate * options.max_speech_duration_s - _FRAME - 2 * self._pad
        self._min_silence = rate * options.min_silence_duration_ms / 1000
        self._min_silence_at_max = rate * 98 / 1000

    def feed(self, probabilities: np.ndarray) -> None:
        for probability in probabilities.tolist():
            self._step(probability, _FRAME * self._frame)
            self._frame += 1
        self._settle()

    def finish(self, length: int) -> None:
        """End of the audio (`length` samples): the open region, if any, ends there."""
        if self._current_start is not None and (length - self._current_start) > self._min_speech:
            self._raw.append(SpeechRegion(self._current_start, length))
        self._current_start = None
        self._triggered = False
        self._length = length
        self._settle()

    @property
    def settled(self) -> int:
        """Samples before this are final: no region still to come (or still growing) reaches back before it."""
        if self._length is not None:
            return self._length
        if self._raw:
            return self._padded_start(self._raw[0])
        last_end = self.regions[-1].end if self.regions else 0
        return max(last_end, int(self._next_raw_start_bound() - self._pad))

    def _next_raw_start_bound(self) -> int:
        """No region found later can start before this."""
        return self._current_start if self._current_start is not None else _FRAME * self._frame

    def _padded_start(self, region: SpeechRegion) -> int:
        if self._previous_raw_end is None:
            return int(max(0, region.start - self._pad))
        silence = region.start - self._previous_raw_end
        return int(max(0, region.start - (silence // 2 if silence < 2 * self._pad else self._pad)))

    def _settle(self) -> None:
        """Move raw regions whose padding is decided into `regions` (get_speech_timestamps' padding pass)."""
        pad = self._pad
        while self._raw:
            region = self._raw[0]
            if len(self._raw) > 1:
                silence = self._raw[1].start - region.end
                end = region.end + int(silence // 2) if silence < 2 * pad else int(region.end + pad)
            elif self._length is not None:
                end = int(min(self._length, region.end + pad))
            elif self._next_raw_start_bound() - region.end >= 2 * pad:
                end = int(region.end + pad)  # whatever comes next is at least 2 pads away
            else:
                return
            self.regions.append(SpeechRegion(self._padded_start(region), int(end)))
            self._previous_raw_end = region.end
            self._raw.pop(0)

    def _step(self, probability: float, position: int) -> None:
        # The loop body of get_speech_timestamps, line for line (its `current_speech` dict is `_current_start`).
        if probability >= self._threshold and self._temp_end:
            self._temp_end = 0
            if self._next_start < self._prev_end:
                self._next_start = position
        if probability >= self._threshold and not self._triggered:
            self._triggered = True
            self._current_start = position
            return
        if self._triggered and self._current_start is not None and position - self._current_start > self._max_speech:
            if self._prev_end:
                self._raw.append(SpeechRegion(self._current_start, self._prev_end))
                self._current_start = None
                if self._next_start < self._prev_end:
                    self._triggered = False
                else:
                    self._current_start = self._next_start
                self._prev_end = self._next_start = self._temp_end = 0
            else:
                self._raw.append(SpeechRegion(self._current_start, position))
                self._current_start = None
                self._prev_end = self._next_start = self._temp_end = 0
                self._triggered = False
                return
        if probability < self._neg_threshold and self._triggered:
            if not self._temp_end:
                self._temp_end = position
            if position - self._temp_end > self._min_silence_at_max:
                self._prev_end = self._temp_end
            if position - self._temp_end < self._min_silence:
                return
            if self._current_start is not None and self._temp_end - self._current_start > self._min_speech:
                self._raw.append(SpeechRegion(self._current_start, self._temp_end))
            self._current_start = None
            self._prev_end = self._next_start = self._temp_end = 0
            self._triggered = False

# -- windows ------------------------------------------------------------------------------------------------------


class Windower:
    """Cuts streamed audio into AudioWindows (see the module's docstring)."""

    def __init__(
        self,
        vad: VadOptions,
        *,
        speech_only: bool,
        window_seconds: float = WINDOW_SECONDS,
        sample_rate: int = SAMPLE_RATE,
        renew_seconds: float | None = None,
    ) -> None:
        self.vad_options = replace(vad, max_speech_duration_s=min(vad.max_speech_duration_s, window_seconds))
        self.renew_seconds = renew_seconds
        self.speech_only = speech_only
        self.sample_rate = sample_rate
        self.window_samples = int(window_seconds * sample_rate)
        self.samples_seen = 0
        self.speech_regions = 0

    def windows(self, blocks: Iterable[np.ndarray]) -> Iterator[AudioWindow]:
        buffer = _Buffer()
        vad: StreamingVad | None = None
        tracker = SpeechTracker(self.vad_options, self.sample_rate)
        cut = 0  # the start of the next window (full mode), or the first sample still needed
        next_region = 0  # regions already put into a window (speech-only mode)
        chunk: list[SpeechRegion] = []
        index = 0
        for block in blocks:
            buffer.append(block)
            self.samples_seen = buffer.end
            if not self.speech_only and vad is None and buffer.end - cut <= self.window_samples:
                continue  # maybe the whole recording is one window: no VAD needed yet
            if vad is None:
                vad = StreamingVad(self.renew_seconds)
                tracker.feed(vad.feed(buffer.read(buffer.start, buffer.end)))
            else:
                tracker.feed(vad.feed(block))
            if self.speech_only:
                for window_chunk in self._full_chunks(tracker, next_region, chunk, final=False):
                    yield self._speech_window(index, window_chunk, buffer)
                    index += 1
                next_region = len(tracker.regions)
                buffer.drop_before(chunk[0].start if chunk else tracker.settled)
            else:
                while tracker.settled - cut >= self.window_samples:
                    end = self._cut(tracker.regions, cut, tracker.settled)
                    yield self._window(index, buffer, cut, end)
                    index += 1
                    cut = end
                    buffer.drop_before(cut)
        length = buffer.end
        self.samples_seen = length
        if vad is None and not self.speech_only:
            if length > cut:
                yield self._window(index, buffer, cut, length, last=True)
            return
        if vad is None:
            vad = StreamingVad(self.renew_seconds)
            tracker.feed(vad.feed(buffer.read(buffer.start, buffer.end)))
        tracker.feed(vad.finish())
        tracker.finish(length)
        self.speech_regions = len(tracker.regions)
        if self.speech_only:
            chunks = list(self._full_chunks(tracker, next_region, chunk, final=True))
            for position, window_chunk in enumerate(chunks):
                yield self._speech_window(index, window_chunk, buffer, last=position == len(chunks) - 1)
                index += 1
            return
        while length - cut > self.window_samples:
            end = self._cut(tracker.regions, cut, length)
            yield self._window(index, buffer, cut, end)
            index += 1
            cut = end
        if length > cut:
            yield self._window(index, buffer, cut, length, last=True)

    def _full_chunks(
        self, tracker: SpeechTracker, first: int, chunk: list[SpeechRegion], *, final: bool
    ) -> Iterator[list[SpeechRegion]]:
        """collect_chunks' rule: regions join the open chunk while its speech stays within the window length."""
        for region in tracker.regions[first:]:
            size = sum(part.end - part.start for part in chunk)
            if chunk and size + region.end - region.start > self.window_samples:
                yield list(chunk)
                chunk.clear()
            chunk.append(region)
        if final and chunk:
            yield list(chunk)
            chunk.clear()

    def _cut(self, regions: list[SpeechRegion], cut: int, horizon: int) -> int:
        """Where the window starting at `cut` ends: in the last silence between padded speech regions that starts
        within the window, as late as the window's length allows (the fewest windows: each is encoded as 30 s);
        at the window's length when speech fills it. Silence reaches to `horizon` after the last region."""
        limit = cut + self.window_samples
        best = limit
        first = bisect.bisect_right([region.end for region in regions], cut)
        low = regions[first - 1].end if first else 0
        gaps = []
        for region in regions[first:]:
            gaps.append((low, region.start))
            low = region.end
        gaps.append((low, horizon))
        for low, high in gaps:
            if low > limit:
                break
            lowest, highest = max(low, cut + 1), min(high, limit)
            if lowest <= highest:
                best = highest
        return best

    def _window(self, index: int, buffer: _Buffer, start: int, end: int, *, last: bool = False) -> AudioWindow:
        return AudioWindow(index, buffer.read(start, end), ((start, end),), self.sample_rate, last)

    def _speech_window(self, index: int, regions: list[SpeechRegion], buffer: _Buffer, *, last: bool = False) -> AudioWindow:
        samples = np.concatenate([buffer.read(region.start, region.end) for region in regions])
        return AudioWindow(index, samples, tuple((region.start, region.end) for region in regions), self.sample_rate, last)


class _Buffer:
    """The recording's samples from `start` to `end` (sample positions in the recording)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self.start = 0
        self.end = 0

    def append(self, block: np.ndarray) -> None:
        if block.size:
            self._parts.append(np.asarray(block, dtype=np.float32))
            self.end += block.size

    def read(self, start: int, end: int) -> np.ndarray:
        start, end = max(start, self.start), min(end, self.end)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        out = np.empty(end - start, dtype=np.float32)
        position = self.start
        written = 0
        for part in self._parts:
            part_end = position + part.size
            if part_end > start and position < end:
                lo, hi = max(start, position) - position, min(end, part_end) - position
                out[written : written + hi - lo] = part[lo:hi]
                written += hi - lo
            position = part_end
            if position >= end:
                break
        return out

    def drop_before(self, position: int) -> None:
        while self._parts and self.start + self._parts[0].size <= position:
            self.start += self._parts[0].size
            self._parts.pop(0)

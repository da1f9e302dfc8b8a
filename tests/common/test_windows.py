"""Windows cut at silences from streamed audio (whisper_common.windows): the streamed VAD equals faster-whisper's over
the whole file, windows cover the recording (or its speech) exactly once, and none is longer than 30 s."""
from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps, get_vad_model

from tests.support import fixture_path
from whisper_common.uploads import decode_audio
from whisper_common.windows import SAMPLE_RATE, SpeechTracker, StreamingVad, Windower


@pytest.fixture(scope="module")
def meeting() -> np.ndarray:
    """Real speech with pauses and a long silence: sample, 40 s of silence, dev00, dev01, jfk (about 2.5 minutes)."""
    silence = np.zeros(40 * SAMPLE_RATE, dtype=np.float32)
    parts = [decode_audio(str(fixture_path(name))).samples for name in ("sample.wav", "dev00.wav", "dev01.wav", "jfk.flac")]
    return np.concatenate([parts[0], silence, *parts[1:]])


def pieces(samples: np.ndarray, seed: int) -> list[np.ndarray]:
    """The audio in blocks of random sizes (as a decoder hands them out)."""
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(rng.integers(1, 3 * SAMPLE_RATE, size=len(samples) // SAMPLE_RATE + 2))
    return [part for part in np.split(samples, cuts[cuts < len(samples)]) if part.size]


def test_streamed_probabilities_equal_whole_file(meeting: np.ndarray) -> None:
    padded = np.pad(meeting, (0, 512 - meeting.shape[0] % 512))
    whole = get_vad_model()(padded).reshape(-1)
    vad = StreamingVad()
    streamed = np.concatenate([vad.feed(block) for block in pieces(meeting, 1)] + [vad.finish()])
    assert streamed.shape == whole.shape
    assert np.array_equal(streamed, whole)


@pytest.mark.parametrize(
    "options",
    [
        VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160),  # the batched pipeline's
        VadOptions(threshold=0.35, min_silence_duration_ms=160, speech_pad_ms=200, max_speech_duration_s=30),  # whisperx
        VadOptions(max_speech_duration_s=8, min_silence_duration_ms=500, speech_pad_ms=30, min_speech_duration_ms=250),
    ],
)
def test_tracker_finds_the_regions_faster_whisper_finds(meeting: np.ndarray, options: VadOptions) -> None:
    expected = get_speech_timestamps(meeting, options)
    padded = np.pad(meeting, (0, 512 - meeting.shape[0] % 512))
    probabilities = get_vad_model()(padded).reshape(-1)
    tracker = SpeechTracker(options)
    settled = []
    for part in np.array_split(probabilities, 37):
        tracker.feed(part)
        settled.append(tracker.settled)
        # what is settled never changes later
        assert all(region.end <= tracker.settled for region in tracker.regions)
    tracker.finish(len(meeting))
    assert [(region.start, region.end) for region in tracker.regions] == [(r["start"], r["end"]) for r in expected]
    assert settled == sorted(settled)


def test_speech_only_windows_are_collect_chunks(meeting: np.ndarray) -> None:
    options = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    expected_regions = get_speech_timestamps(meeting, options)
    chunks, _ = collect_chunks(meeting, expected_regions, max_duration=30)
    windows = list(Windower(options, speech_only=True).windows(pieces(meeting, 2)))
    assert len(windows) == len(chunks)
    for window, chunk in zip(windows, chunks):
        assert np.array_equal(window.samples, chunk)
        assert window.duration <= 30.0
    clips = [clip for window in windows for clip in window.clips]
    assert clips == [(r["start"], r["end"]) for r in expected_regions]


def test_full_windows_cover_the_recording_once_and_cut_in_silence(meeting: np.ndarray) -> None:
    options = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    windows = list(Windower(options, speech_only=False).windows(pieces(meeting, 3)))
    assert np.array_equal(np.concatenate([window.samples for window in windows]), meeting)
    assert windows[0].start == 0 and windows[-1].end == pytest.approx(len(meeting) / SAMPLE_RATE)
    for before, after in zip(windows, windows[1:]):
        assert before.clips[-1][1] == after.clips[0][0]
    assert all(window.duration <= 30.0 for window in windows)
    speech = get_speech_timestamps(meeting, VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160, speech_pad_ms=0))
    for window in windows[:-1]:
        seam = window.clips[-1][1]
        assert not any(region["start"] < seam < region["end"] for region in speech), f"cut inside speech at {seam / SAMPLE_RATE:.2f} s"
    assert len(windows) <= int(len(meeting) / SAMPLE_RATE / 30) + 3  # windows are long: encoder work is per window


def test_a_short_recording_is_one_window_without_vad() -> None:
    samples = decode_audio(str(fixture_path("jfk.flac"))).samples
    windower = Windower(VadOptions(), speech_only=False)
    windows = list(windower.windows(pieces(samples, 4)))
    assert len(windows) == 1 and np.array_equal(windows[0].samples, samples) and windows[0].last


def test_silence_is_no_speech_window_and_full_windows_of_silence() -> None:
    silence = np.zeros(75 * SAMPLE_RATE, dtype=np.float32)
    assert list(Windower(VadOptions(), speech_only=True).windows([silence])) == []
    full = list(Windower(VadOptions(), speech_only=False).windows([silence]))
    assert [round(window.duration) for window in full] == [30, 30, 15]


def test_window_times_map_back_to_the_recording(meeting: np.ndarray) -> None:
    options = VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)
    window = next(w for w in Windower(options, speech_only=True).windows([meeting]) if len(w.clips) > 1)
    (first_start, first_end), (second_start, _) = window.clips[0], window.clips[1]
    assert window.original_time(0.0) == round(first_start / SAMPLE_RATE, 2)
    inside_second = (first_end - first_start) / SAMPLE_RATE + 0.5
    assert window.original_time(inside_second) == pytest.approx(second_start / SAMPLE_RATE + 0.5, abs=0.011)
    tail = window.tail(inside_second)
    assert tail.clips[0][0] == second_start + SAMPLE_RATE // 2 and len(tail.samples) == len(window.samples) - int(inside_second * SAMPLE_RATE)


def test_renewed_probabilities_and_regions_equal_the_speech_gate(meeting: np.ndarray) -> None:
    from whisper_common import speech_gate

    gate_options = speech_gate.GateOptions()
    expected_probabilities = speech_gate.speech_probabilities(meeting)
    vad = StreamingVad(speech_gate.RENEW_SECONDS)
    streamed = np.concatenate([vad.feed(block) for block in pieces(meeting, 5)] + [vad.finish()])
    assert np.array_equal(streamed, expected_probabilities)
    options = VadOptions(threshold=gate_options.threshold, min_silence_duration_ms=gate_options.min_silence_ms,
                         speech_pad_ms=gate_options.speech_pad_ms)
    tracker = SpeechTracker(options)
    tracker.feed(streamed)
    tracker.finish(len(meeting))
    expected = speech_gate.speech_regions(meeting, gate_options, expected_probabilities)
    assert [(region.start, region.end) for region in tracker.regions] == [(r["start"], r["end"]) for r in expected]


def test_unheard_gives_the_runs_of_clips_no_word_touches() -> None:
    """Speech a decoding left without words comes back as windows of its own: runs of untouched clips in a row, long
    enough, with their own samples and clips (a word's span touching a clip's edge counts as heard)."""
    from whisper_common.windows import AudioWindow

    second = SAMPLE_RATE
    clips = ((0, 2 * second), (5 * second, 6 * second), (6 * second, 9 * second), (20 * second, 21 * second),
             (30 * second, 33 * second))
    samples = np.concatenate([np.full(end - start, index, dtype=np.float32) for index, (start, end) in enumerate(clips)])
    window = AudioWindow(0, samples, clips)
    parts = window.unheard([(0.5, 1.0), (20.2, 20.4), (33.0, 33.5)], min_seconds=2.0)
    assert [part.clips for part in parts] == [((5 * second, 6 * second), (6 * second, 9 * second))]
    assert np.array_equal(parts[0].samples, np.concatenate([np.full(second, 1.0), np.full(3 * second, 2.0)]))
    assert parts[0].original_time(1.5) == 6.5
    # shorter runs than min_seconds are left alone; with no word at all, all of the window is one run
    assert window.unheard([(0.5, 1.0), (20.2, 20.4), (33.0, 33.5)], min_seconds=4.5) == []
    assert [part.clips for part in window.unheard([], min_seconds=2.0)] == [clips]
    # a word reaching over several clips touches each of them
    assert window.unheard([(1.0, 31.0)], min_seconds=0.5) == []

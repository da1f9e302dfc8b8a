"""bench/bench_open_segments.py says where whisper-faster's time on 30 s of speech goes: faster-whisper decodes again
from a segment its first decoding left open, and docs/batching.md says the words at a window's end come only from that
second decoding. Here on sample.wav, whose speech runs to 29.8 s of its 30 s: the real model, the benchmark's own
decoders."""
from __future__ import annotations

from bench.batching_answers import wer
from bench.bench_open_segments import Sequential
from bench.whisperx_clips import decode

SAMPLE_END = "call me a yankee"  # sample.wav's words (its STM) in its last 4.5 s, after the open segment's start


def test_the_words_at_the_end_come_from_decoding_the_open_segment_again() -> None:
    samples = decode("sample.wav")
    again, once = Sequential(), Sequential(redecode=False)

    full, cut = again.transcribe(samples), once.transcribe(samples)

    assert again.endings.open == once.endings.open == 1  # the first decoding left its last segment open...
    assert again.endings.with_words == 0  # ...with no words in it
    assert (again.counter.rows, once.counter.rows) == (2, 1)  # decoding it again takes a second window
    assert SAMPLE_END in full.lower().replace(",", "").replace(".", "")
    assert "yankee" not in cut.lower()
    assert len(cut.split()) < len(full.split())
    assert wer(full, cut) > 0.1

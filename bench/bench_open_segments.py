"""Where whisper-faster's time on 30 s of speech goes, against faster-whisper's batched pipeline (issue 20), measured
in this process without servers or batching across requests, so that only the decoding differs.

    python -m bench.bench_open_segments [--cuts 16]

Every window of whisper-faster is decoded by faster-whisper's sequential rule (`WhisperModel.transcribe`, with
timestamps, beam 5, the temperature fallback, `condition_on_previous_text=False`: `transcribe_window`). When speech
reaches the end of the 30 s the model sees, it closes its segments up to a timestamp and opens one more with no words
in it; faster-whisper then decodes again from that timestamp, a second 30 s window. The batched pipeline decodes
without timestamps, so it never does. The decodings compared, clip by clip, interleaved:

- as whisper-faster decodes a window with the guard off (its `hallucination_guard=false` request);
- the same with `temperature=0` (no fallback; a request can ask for it);
- the same with the open segment not decoded again (faster-whisper's batched pipeline in timestamp mode does this):
  what matching the pipeline's window count would take, and the words it would lose. Not something the service does;
- faster-whisper's `BatchedInferencePipeline` (batch 8) on the clip, as bench_batching's "clip by clip" baseline.

On the 30 s cuts bench_batching's concurrency part sends (from cut 0), on held-out cuts no other part uses (from cut
48, reported apart), and on the eight whole recordings with references (sample.wav and jfk.flac in turn). CPU time is
this process's (nothing else runs in it meanwhile), so other work on the machine moves it little.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.batching_answers import wer
from bench.bench_batching import THREADS, CountingEncoder, Pipeline, referenced_clips, thirty_second_clips
from bench.report import table, write_section
from bench.whisperx_clips import SAMPLE_RATE, Clip
from whisper_common.model_catalog import embedded_model_dir
from whisper_faster.options import FasterOptions

HELD_OUT_FIRST_CUT = 48
"""The held-out cuts start here: bench_batching measures cuts 0-31 and chooses its defaults on cuts 32-39."""


class OpenEndings:
    """Stands for a WhisperModel's `_split_segments_by_timestamps` (faster-whisper 1.2's keyword call): counts the
    decodings that leave their last segment open (faster-whisper then decodes again from its timestamp) and those
    whose tokens after the last timestamp pair hold words; with `redecode=False` such a decoding is taken as finished,
    its open segment dropped."""

    def __init__(self, split: Callable[..., tuple[list[dict[str, Any]], int, bool]], redecode: bool) -> None:
        self.split = split
        self.redecode = redecode
        self.open = 0
        self.with_words = 0

    def __call__(self, **kwargs: Any) -> tuple[list[dict[str, Any]], int, bool]:
        segments, seek, single_timestamp_ending = self.split(**kwargs)
        finished = kwargs["seek"] + kwargs["segment_size"]
        if seek >= finished:
            return segments, seek, single_timestamp_ending
        self.open += 1
        tokens, first_timestamp = kwargs["tokens"], kwargs["tokenizer"].timestamp_begin
        pairs = [i for i in range(1, len(tokens)) if tokens[i] >= first_timestamp and tokens[i - 1] >= first_timestamp]
        if pairs and any(token < first_timestamp for token in tokens[pairs[-1]:]):
            self.with_words += 1
        if self.redecode:
            return segments, seek, single_timestamp_ending
        return segments, finished, True


@dataclass
class Tally:
    cpu: float = 0.0
    wall: float = 0.0
    rows: int = 0
    generates: int = 0
    opened: int = 0
    opened_with_words: int = 0
    texts: list[str] = field(default_factory=list)

    @property
    def words(self) -> int:
        return sum(len(text.split()) for text in self.texts)


class Sequential:
    """whisper-faster's decoding of one window (guard off), on a model of its own whose CTranslate2 calls are counted."""

    def __init__(self, *, redecode: bool = True, temperature: float | None = None) -> None:
        from faster_whisper import WhisperModel

        model = WhisperModel(str(embedded_model_dir()), device="cpu", compute_type="int8", cpu_threads=THREADS)
        self.counter = CountingEncoder(model.model)
        model.model = self.counter
        self.endings = OpenEndings(model._split_segments_by_timestamps, redecode)
        model._split_segments_by_timestamps = self.endings  # type: ignore[method-assign]
        self.model = model
        options = FasterOptions(hallucination_guard=False, temperature=temperature)
        self.kwargs = {**options.transcribe_kwargs(), "language": "en", "condition_on_previous_text": False}

    def transcribe(self, samples: Any) -> str:
        segments, _ = self.model.transcribe(samples, **self.kwargs)
        return "".join(segment.text for segment in segments)


class PipelineByClip:
    """bench_batching's baseline (faster-whisper's batched pipeline, its encoder rows and generate calls counted)."""

    def __init__(self) -> None:
        self.baseline = Pipeline()
        self.counter = self.baseline.encoder
        self.endings = None

    def transcribe(self, samples: Any) -> str:
        self.baseline.seconds(samples)
        return self.baseline.text


DECODINGS: dict[str, Callable[[], Sequential | PipelineByClip]] = {
    "whisper-faster's window decoding (guard off)": Sequential,
    "the same, temperature=0": lambda: Sequential(temperature=0.0),
    "the same, open segment not decoded again": lambda: Sequential(redecode=False),
    "batched pipeline (batch 8), clip by clip": PipelineByClip,
}


def measure(decoders: dict[str, Sequential | PipelineByClip], clips: list[Clip]) -> dict[str, Tally]:
    """Every decoding on every clip, the decodings taking turns on each clip."""
    tallies = {name: Tally() for name in decoders}
    for clip in clips:
        for name, decoder in decoders.items():
            tally, counter, endings = tallies[name], decoder.counter, decoder.endings
            rows, generates = counter.rows, counter.generates
            opened, with_words = (endings.open, endings.with_words) if endings is not None else (0, 0)
            started, cpu = time.perf_counter(), time.process_time()
            tally.texts.append(decoder.transcribe(clip.samples))
            tally.wall += time.perf_counter() - started
            tally.cpu += time.process_time() - cpu
            tally.rows += counter.rows - rows
            tally.generates += counter.generates - generates
            if endings is not None:
                tally.opened += endings.open - opened
                tally.opened_with_words += endings.with_words - with_words
    return tallies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", type=int, default=16, help="30 s cuts measured, and as many held out")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    args = parser.parse_args()
    referenced, reference = referenced_clips()
    sets = {
        f"30 s cuts 0-{args.cuts - 1}": thirty_second_clips(args.cuts),
        f"held-out 30 s cuts {HELD_OUT_FIRST_CUT}-{HELD_OUT_FIRST_CUT + args.cuts - 1}":
            thirty_second_clips(args.cuts, first=HELD_OUT_FIRST_CUT),
        "8 whole recordings with references": referenced,
    }
    started = time.perf_counter()
    rows = []
    decoders = {name: make() for name, make in DECODINGS.items()}
    for set_name, clips in sets.items():
        tallies = measure(decoders, clips)
        base = tallies[next(iter(DECODINGS))]
        for name, tally in tallies.items():
            opened = f"{tally.opened} ({tally.opened_with_words})" if decoders[name].endings is not None else "-"
            quality = f"{wer(reference, ' '.join(tally.texts)):.3f}" if set_name.startswith("8 whole") else "-"
            rows.append([set_name, name, len(clips), f"{tally.cpu:.1f}", f"**{tally.cpu / base.cpu:.2f}**",
                         f"{tally.wall:.1f}", tally.rows, tally.generates, opened, tally.words, quality])
            print(rows[-1], flush=True)
    seconds = time.perf_counter() - started
    audio = sum(len(clip.samples) for clip in sets[next(iter(sets))]) / SAMPLE_RATE
    body = (
        "The decodings of one window, each clip in turn through each (this process, embedded `tiny.en`, int8, "
        f"{THREADS} CTranslate2 threads, no batching across clips; {audio:.0f} s of audio in the first set). CPU "
        "ratio: against whisper-faster's window decoding on the same set. Encoder rows are the 30 s windows encoded; "
        "open endings are decodings that left their last segment open, which faster-whisper decodes again from its "
        "timestamp (in brackets: those with words after their last timestamp pair, which the open segment would "
        "keep). Only whisper-faster's own decoding and the pipeline are things the services do; the row with the "
        "open segment not decoded again says what matching the pipeline's window count would cost in words.\n\n"
        + table(["clips", "decoding", "n", "CPU s", "CPU / whisper-faster's", "wall s", "encoder rows",
                 "generate calls", "open endings (with words)", "words", "WER"], rows)
        + f"\n\n{seconds:.0f} s in all."
    )
    if not args.no_write:
        write_section("open-segments", "Where whisper-faster's time on 30 s of speech goes (issue 20)", body)
    else:
        print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

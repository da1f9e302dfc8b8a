"""whisperx: throughput of /transcribe (without and with diarization) against the engine under it,
faster-whisper's `BatchedInferencePipeline` (same embedded tiny.en, batch size, threads and audio, same run);
words and WER (speech must not be dropped for speed); word boundaries; DER of the embedded diarizer on the
fixtures, re-cut fixtures and mixed conversations; peak RSS of the service.

    python -m bench.bench_whisperx [--repeat 3] [--long-minutes 10]

Each round runs the baseline and the two service requests back to back, in an order that rotates every round,
so load from other processes hits all three alike; each time is a median over the rounds.
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx

from bench.report import peak_rss_mb, table, write_section
from bench.whisperx_clips import Clip, decode, join, write_wav
from tests.support import FIXTURES, free_port, python_module, server_process
from tests.whisperx_api.synth import boundary_errors, build_clip

THREADS = 2
BATCH = 8
REPLACED_RSS_MB = {"without": 500, "with": 800}
# The service before this benchmark's changes (commit 7b5c2f4: WhisperX's pyannote VAD + batched decoding, then a
# second cross-attention pass for word timings), measured on the same clips with the same code as `words()`.
BEFORE_WORDS = {"sample.wav": 75, "jfk.flac": 22, "dev00.wav": 59, "dev01.wav": 51, "10-minute": 1162}
BEFORE_WER = {"sample.wav": 0.123, "jfk.flac": 0.0}
BEFORE_BOUNDARY = ["before (a second cross-attention pass, snapped; docs at commit 7b5c2f4)", "11/13", "6 ms", "82 ms", "132 ms"]
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def long_recording(seconds: float) -> Clip:
    """The fixtures (sample, dev00, dev01, jfk, stereo_diarization) repeated with 0.5 s pauses up to `seconds`."""
    clips = [Clip(name, decode(name)) for name in ("sample.wav", "dev00.wav", "dev01.wav", "jfk.flac", "stereo_diarization.wav")]
    return join(clips, f"{seconds / 60:g}-minute", limit=seconds)


def torch_build() -> str:
    import torch

    return f"torch {torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU'} build)"


def engine_peak_rss_mb(minutes: float) -> float:
    """Peak RSS of a fresh process that only runs the baseline engine (batched, word timestamps) on the long
    recording: what batched decoding itself costs, before any service code."""
    import subprocess
    import sys

    code = (
        "import os; from bench.bench_whisperx import Baseline, long_recording; from bench.report import peak_rss_mb; "
        f"Baseline().run(long_recording({minutes * 60}).samples, word_timestamps=True); print(peak_rss_mb(os.getpid()))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def torch_loaded(pid: int) -> str:
    """Whether the service process has PyTorch's library mapped (the embedded diarizer should not need it)."""
    return "yes" if "libtorch" in Path(f"/proc/{pid}/maps").read_text() else "no"


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalized(reference), normalized(hypothesis))


def stm_text(name: str) -> str:
    lines = (FIXTURES / name).read_text().splitlines()
    return " ".join(" ".join(line.split()[5:]) for line in lines if line.strip() and not line.startswith(";;"))


class Baseline:
    """faster-whisper's BatchedInferencePipeline as its README shows it (its default Silero VAD settings)."""

    def __init__(self) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        from whisper_common.model_catalog import embedded_model_dir

        model = WhisperModel(str(embedded_model_dir()), device="cpu", compute_type="int8", cpu_threads=THREADS)
        self.pipeline = BatchedInferencePipeline(model)
        self.sequential = model

    def run(self, samples: Any, *, word_timestamps: bool = False) -> tuple[float, str]:
        started = time.perf_counter()
        segments, _ = self.pipeline.transcribe(samples, language="en", batch_size=BATCH, word_timestamps=word_timestamps)
        text = "".join(segment.text for segment in segments)
        return time.perf_counter() - started, text

    def beam5(self, samples: Any) -> str:
        segments, _ = self.sequential.transcribe(samples, language="en", beam_size=5)
        return "".join(segment.text for segment in segments)


def post(client: httpx.Client, path: Path, diarize: bool) -> tuple[float, dict]:
    started = time.perf_counter()
    with path.open("rb") as audio:
        response = client.post("/transcribe", files={"file": (path.name, audio)}, data={"diarize": str(diarize).lower()})
    response.raise_for_status()
    return time.perf_counter() - started, response.json()


def service_text(body: dict) -> str:
    return " ".join(segment["text"] for segment in body["segments"])


def service_words(body: dict) -> int:
    return sum(len(segment["words"]) for segment in body["segments"])


def run_service(repeat: int, long_minutes: float, tmp: str) -> dict[str, str]:
    baseline = Baseline()
    port = free_port()
    env = {
        "UVICORN_HOST": "127.0.0.1", "UVICORN_PORT": str(port), "WHISPER__CPU_THREADS": str(THREADS),
        "WHISPER__INFERENCE_DEVICE": "cpu", "BATCH_SIZE": str(BATCH), "MAX_CONCURRENCY": "1", "LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1", "HF_TOKEN": "", "DATA_DIR": str(Path(tmp) / "data"),
    }
    base = f"http://127.0.0.1:{port}"
    speed_rows: list[list[object]] = []
    word_rows: list[list[object]] = []
    rss: dict[str, float] = {}
    with server_process(
        python_module("whisperx_api"), health_url=f"{base}/health/ready", env=env, log_name="bench-whisperx", timeout=300
    ) as process, httpx.Client(base_url=base, timeout=3600) as client:
        clips = [Clip(name, decode(name)) for name in ("dev00.wav", "sample.wav")] + [long_recording(long_minutes * 60)]
        for name in ("jfk.flac", "dev00.wav", "sample.wav"):
            post(client, FIXTURES / name, False)
        rss["without"] = peak_rss_mb(process.pid)
        for name in ("jfk.flac", "dev00.wav", "sample.wav"):
            post(client, FIXTURES / name, True)  # the first loads the diarizer
        rss["with"] = peak_rss_mb(process.pid)
        torch_after_diarizing = torch_loaded(process.pid)
        for clip in clips:
            path = write_wav(clip, Path(tmp))
            times: dict[str, list[float]] = {"base": [], "base+words": [], "plain": [], "diarized": []}
            bodies: dict[str, dict] = {}
            texts: dict[str, str] = {}
            runs = {
                "base": lambda: baseline.run(clip.samples),
                "base+words": lambda: baseline.run(clip.samples, word_timestamps=True),
                "plain": lambda: post(client, path, False),
                "diarized": lambda: post(client, path, True),
            }
            order = list(runs)
            for round_number in range(repeat + 1):  # round 0 warms up, is not counted
                for key in order[round_number % 4 :] + order[: round_number % 4]:
                    seconds, result = runs[key]()
                    if round_number:
                        times[key].append(seconds)
                    if isinstance(result, dict):
                        bodies[key] = result
                    else:
                        texts[key] = result
            median = {key: statistics.median(values) for key, values in times.items()}
            for key, label in (("plain", "no"), ("diarized", "yes")):
                speed_rows.append([
                    clip.name, label, f"{clip.seconds:.0f}", f"{median['base']:.2f}", f"{clip.seconds / median['base']:.1f}x",
                    f"{median[key]:.2f}", f"{clip.seconds / median[key]:.1f}x", f"**{median['base'] / median[key]:.2f}**",
                    f"{median['base'] / median['base+words']:.2f}", f"{median['base+words'] / median[key]:.2f}",
                ])
            beam5 = len(baseline.beam5(clip.samples).split()) if clip.seconds <= 60 else "-"
            word_rows.append([
                clip.name, BEFORE_WORDS.get(clip.name, "-"), service_words(bodies["plain"]), len(texts["base"].split()), beam5,
            ])
        for name in ("jfk.flac", "dev01.wav"):
            _, body = post(client, FIXTURES / name, False)
            _, text = baseline.run(decode(name))
            word_rows.append([name, BEFORE_WORDS[name], service_words(body), len(text.split()), len(baseline.beam5(decode(name)).split())])
        rss["long"] = peak_rss_mb(process.pid)
        wer_rows = []
        for name, reference in (("sample.wav", stm_text("sample.stm")), ("jfk.flac", JFK_TEXT)):
            _, body = post(client, FIXTURES / name, False)
            _, text = baseline.run(decode(name))
            wer_rows.append([name, f"{BEFORE_WER[name]:.3f}", f"{wer(reference, service_text(body)):.3f}", f"{wer(reference, text):.3f}",
                             f"{wer(reference, baseline.beam5(decode(name))):.3f}"])
        boundary = word_boundaries(client, Path(tmp))
    return {
        "speed": table(
            ["audio", "diarize", "audio s", "BatchedInferencePipeline s", "x-realtime", "/transcribe s", "x-realtime",
             "service / batched (throughput)", "batched+word_timestamps / batched", "service / batched+word_timestamps"],
            speed_rows,
        ),
        "words": table(["audio", "words, service before", "words, service now", "words, batched (default VAD)",
                        "words, sequential beam 5"], word_rows),
        "wer": table(["audio", "WER service before", "WER service now", "WER batched", "WER sequential beam 5"], wer_rows),
        "boundary": boundary,
        "memory": table(
            ["service", "peak RSS (VmHWM)", "replaced deployment (quoted)"],
            [["after jfk, dev00, sample without diarization", f"{rss['without']:.0f} MB", f"~{REPLACED_RSS_MB['without']} MB"],
             [f"then the same three diarized (PyTorch loaded: {torch_after_diarizing})", f"{rss['with']:.0f} MB",
              f"~{REPLACED_RSS_MB['with']} MB"],
             [f"then everything above, {long_minutes:g}-minute recording included (diarized)", f"{rss['long']:.0f} MB", ""],
             [f"the engine alone on the {long_minutes:g}-minute recording (batch {BATCH}, word timestamps, fresh process)",
              f"{engine_peak_rss_mb(long_minutes):.0f} MB", ""]],
        ),
    }


def word_boundaries(client: httpx.Client, folder: Path) -> str:
    from tests.wav import write_wav as write_samples

    samples, truth = build_clip()
    path = write_samples(samples, folder / "words.wav")
    _, body = post(client, path, False)
    words = [word for segment in body["segments"] for word in segment["words"]]
    errors = sorted(boundary_errors(truth, words))
    return table(
        ["word timings", "words matched", "median abs error", "mean", "p90"],
        [[f"served ({body['alignment']}, from the decoding pass, snapped to speech edges)", f"{len(errors) // 2}/{len(truth)}",
          f"{statistics.median(errors) * 1000:.0f} ms", f"{statistics.mean(errors) * 1000:.0f} ms",
          f"{errors[int(0.9 * (len(errors) - 1))] * 1000:.0f} ms"],
         BEFORE_BOUNDARY],
    )


def der_table() -> str:
    from bench.der_eval import dev_clips, held_out_clips, new_diarizer, render, score

    diarizer = new_diarizer()
    return (
        f"Developed on:\n\n{render(score(diarizer, dev_clips()))}\n\n"
        f"Held out (never tuned on; `bench/der_eval.py`):\n\n{render(score(diarizer, held_out_clips()))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--long-minutes", type=float, default=10)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*'uem' was approximated.*")
    with tempfile.TemporaryDirectory() as tmp:
        measured = run_service(args.repeat, args.long_minutes, tmp)
    ders = der_table()
    body = f"""
Embedded `tiny.en`, int8, {THREADS} CPU threads, batch size {BATCH}, `MAX_CONCURRENCY=1`, offline (so word timings
are Whisper's cross-attention from the decoding pass and diarization the embedded diarizer). The baseline is
`faster_whisper.BatchedInferencePipeline.transcribe` (its default Silero VAD, beam 5, batch {BATCH}, **no** word
timestamps) on the already decoded audio, in this process; the service is timed over HTTP (upload and decoding
included) with word timings always on. Each round runs baseline, /transcribe, /transcribe with diarization and
the baseline with word timestamps back to back, the order rotating per round; times are medians of {args.repeat}
rounds after a warm-up round. Absolute times move with whatever else the machine runs; the interleaved ratios
are the figure to read.

### Speed (service / batched ≥ 0.8 without diarization, ≥ 0.65 with)

{measured["speed"]}

### Words and WER (speed must not come from dropping speech)

"Before" is the service at commit 7b5c2f4 (WhisperX's pyannote VAD, then a second cross-attention pass for word
timings), measured on the same audio. The 10-minute recording is the fixtures repeated (sample, dev00, dev01,
jfk, stereo_diarization, 0.5 s pauses).

{measured["words"]}

{measured["wer"]}

### Word boundaries (espeak-ng clip, words joined with known silences of 0.15-0.6 s)

{measured["boundary"]}

### Diarization error rate (embedded diarizer, no speaker count given)

Developed on: the fixtures, the AMI excerpts cut differently (halves; both excerpts joined), and six conversations
mixed from single-speaker turns of the fixtures and two espeak-ng voices (2-4 voices, pauses, a fifth of the changes
overlapping; `bench/whisperx_clips.py`, seed 12). Held out, to check that changes generalise: the fixtures cut at
other offsets, joins of different recordings (four voices), eight conversations from another seed, and single voices
(a recording of one speaker must stay one speaker). Before this round's clustering changes (scikit-learn's spectral
clustering, the eigengap count alone) the means were 29.9 % and 29.7 %.

{ders}

### Memory (peak RSS of the service process in the venv)

The embedded diarizer and the known-speaker matcher run resemblyzer's d-vector network in numpy and cluster with
numpy/scipy, so a diarized request imports neither PyTorch ({torch_build()} is installed, for the pyannote and
wav2vec2 paths) nor scikit-learn, librosa or numba. On long recordings the peak is the engine's: batched decoding
holds every batch slot's encoder attention at once (tiny.en, batch {BATCH}); a smaller `BATCH_SIZE` lowers it.

{measured["memory"]}
"""
    write_section("whisperx", "WhisperX service", body)


if __name__ == "__main__":
    main()

"""whisperx: x-realtime of /transcribe with and without diarization against faster-whisper called directly (same
embedded tiny.en, same threads, same run); DER of the embedded diarizer; word-boundary error on a synthesized clip;
peak RSS of the service with and without diarization.

    python -m bench.bench_whisperx [--repeat 3]

Service and direct runs alternate so load from other processes hits both alike; each time is a median.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import httpx

from bench.report import table, write_section
from tests.support import FIXTURES, free_port, python_module, server_process
from tests.whisperx_api.der import der_of
from tests.whisperx_api.synth import boundary_errors, build_clip

FILES = ("sample.wav", "dev00.wav")
DER_FILES = ("sample", "dev00", "dev01")
THREADS = 2
REPLACED_RSS_MB = {"without": 500, "with": 800}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def import_torch_rss_mb() -> float:
    """The venv's torch is the CUDA build; importing it alone maps its libraries (the Docker image uses CPU wheels)."""
    import subprocess
    import sys

    code = "import torch; print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 1024


def audio_seconds(name: str) -> float:
    from whisper_common.uploads import decode_audio

    return decode_audio(str(FIXTURES / name)).duration


def post(client: httpx.Client, name: str, diarize: bool) -> float:
    started = time.perf_counter()
    with (FIXTURES / name).open("rb") as audio:
        response = client.post("/transcribe", files={"file": (name, audio)}, data={"diarize": str(diarize).lower()})
    response.raise_for_status()
    return time.perf_counter() - started


def direct_seconds(model, name: str) -> float:
    from whisper_common.uploads import decode_audio

    samples = decode_audio(str(FIXTURES / name)).samples
    started = time.perf_counter()
    segments, _ = model.transcribe(samples, language="en", beam_size=5)
    list(segments)
    return time.perf_counter() - started


def speed_and_memory(repeat: int) -> tuple[str, str]:
    from faster_whisper import WhisperModel

    from whisper_common.model_catalog import embedded_model_dir

    direct = WhisperModel(str(embedded_model_dir()), device="cpu", compute_type="int8", cpu_threads=THREADS)
    port = free_port()
    env = {
        "UVICORN_HOST": "127.0.0.1",
        "UVICORN_PORT": str(port),
        "WHISPER__CPU_THREADS": str(THREADS),
        "WHISPER__INFERENCE_DEVICE": "cpu",
        "MAX_CONCURRENCY": "1",
        "LOG_LEVEL": "warning",
        "HF_HUB_OFFLINE": "1",
    }
    base = f"http://127.0.0.1:{port}"
    rows: list[list[object]] = []
    rss: dict[str, float] = {}
    with server_process(
        python_module("whisperx_api"), health_url=f"{base}/health/ready", env=env, log_name="bench-whisperx", timeout=300
    ) as process, httpx.Client(base_url=base, timeout=600) as client:
        for diarize in (False, True):
            for name in FILES:
                post(client, name, diarize)  # warm-up: first-use loads (alignment attempt, diarizer)
                service_times, direct_times = [], []
                for _ in range(repeat):
                    service_times.append(post(client, name, diarize))
                    direct_times.append(direct_seconds(direct, name))
                seconds = audio_seconds(name)
                service, baseline = statistics.median(service_times), statistics.median(direct_times)
                rows.append([
                    name, "yes" if diarize else "no", f"{seconds:.1f}", f"{service:.2f}", f"{seconds / service:.1f}x",
                    f"{baseline:.2f}", f"{seconds / baseline:.1f}x", f"{service / baseline:.2f}",
                ])
            rss["with" if diarize else "without"] = peak_rss_mb(process.pid)
    speed = table(
        ["file", "diarize", "audio s", "/transcribe s", "x-realtime", "faster-whisper direct s", "x-realtime",
         "service / direct"],
        rows,
    )
    memory = table(
        ["service", "peak RSS (VmHWM)", "replaced deployment (quoted)"],
        [[f"{label} diarization", f"{rss[label]:.0f} MB", f"~{REPLACED_RSS_MB[label]} MB"] for label in ("without", "with")]
        + [["floor: `python -c 'import torch'` in the same venv", f"{import_torch_rss_mb():.0f} MB", ""]],
    )
    return speed, memory


def der_table() -> str:
    from whisper_common.uploads import decode_audio
    from whisperx_api.diarize.base import SpeakerBounds
    from whisperx_api.diarize.embedded import EmbeddedDiarizer

    diarizer = EmbeddedDiarizer()
    diarizer(decode_audio(str(FIXTURES / "jfk.flac")).samples, SpeakerBounds())  # warm-up: first torch/ONNX calls
    rows = []
    for file_id in DER_FILES:
        samples = decode_audio(str(FIXTURES / f"{file_id}.wav")).samples
        started = time.perf_counter()
        turns = diarizer(samples, SpeakerBounds())
        elapsed = time.perf_counter() - started
        result = der_of(file_id, [(t.start, t.end, t.speaker) for t in turns])
        rows.append([
            f"{file_id}.wav", f"{result.der:.1%}", f"{result.missed:.1%}", f"{result.false_alarm:.1%}",
            f"{result.confusion:.1%}", f"{result.speakers} / {result.reference_speakers}", f"{elapsed:.2f}",
        ])
    return table(["file", "DER (collar 0.25 s)", "missed", "false alarm", "confusion", "speakers found / reference",
                  "seconds"], rows)


def word_boundary_table() -> str:
    from whisperx_api.align import cross_attention_words
    from whisperx_api.models import LoaderOptions, WhisperXLoader
    from whisperx_api.settings import WhisperXSettings

    samples, truth = build_clip()
    model = WhisperXLoader(LoaderOptions("cpu", 0, "int8", THREADS, 1), WhisperXSettings())("tiny.en")
    raw = model.pipeline.transcribe(samples, batch_size=8, language="en")["segments"]
    rows = []
    for label, snap in (("cross-attention, snapped to speech edges (served)", True), ("cross-attention, raw", False)):
        words = [w for s in cross_attention_words(model, samples, raw, "en", snap=snap) for w in s["words"]]
        errors = sorted(boundary_errors(truth, words))
        rows.append([
            label, f"{len(errors) // 2}/{len(truth)}", f"{statistics.median(errors) * 1000:.0f} ms",
            f"{statistics.mean(errors) * 1000:.0f} ms", f"{errors[int(0.9 * (len(errors) - 1))] * 1000:.0f} ms",
        ])
    return table(["word timings", "words matched", "median abs error", "mean", "p90"], rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    speed, memory = speed_and_memory(args.repeat)
    der = der_table()
    words = word_boundary_table()
    body = f"""
Embedded `tiny.en`, int8, {THREADS} CPU threads, `MAX_CONCURRENCY=1`, offline (so alignment is Whisper's cross-attention
and diarization the embedded diarizer). The baseline is `faster_whisper.WhisperModel.transcribe` (beam 5, no word
timestamps) on the same decoded audio, alternated with the service requests; times are medians of {args.repeat}.
The machine's 2 cores were shared with other engineers' test runs, so absolute times are noisy; the ratios are
the figure to read.

### Speed

{speed}

### Diarization error rate (embedded diarizer, no speaker count given)

{der}

### Word boundaries (espeak-ng clip, words joined with known silences of 0.15-0.6 s)

{words}

### Memory

{memory}
"""
    write_section("whisperx", "WhisperX service", body)


if __name__ == "__main__":
    main()

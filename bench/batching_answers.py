"""What the services answer (words, WER, word timings) and one request's peak memory, on the recordings issue 20 names:
sample.wav, jfk.flac, a 10-minute recording with a reference transcript, the fixtures' 10-minute recording and six
copies of it (60 minutes). Run at any commit; `bench.bench_batching` compares its figures with those measured at the
commit the batch scheduler started from (`TODAY`).

    python -m bench.batching_answers [--service whisper_faster|whisperx_api] [--long] [--env KEY=VALUE ...]

Every recording goes to a fresh server, so the peak RSS (VmHWM) read after it is that one request's.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from bench.report import peak_rss_mb
from bench.whisperx_clips import SAMPLE_RATE, Clip, decode, join, write_wav
from tests.support import ARTIFACTS, FIXTURES, free_port, python_module, server_process

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
THREADS = 2

# Measured with this script at commit 6c28b7e (before the batch scheduler), embedded tiny.en, 2 threads.
TODAY: dict[str, dict[str, object]] = {'whisper_faster': {'sample.wav': {'wer': 0.1728, 'words': 73, 'seconds': 4.74},
                    'jfk.flac': {'wer': 0.0, 'words': 22, 'seconds': 1.98},
                    'word timings': {'matched': '11/13', 'median_ms': 180, 'mean_ms': 250, 'p90_ms': 402},
                    'referenced-10': {'words': 1352,
                                      'seconds': 112.5,
                                      'peak_rss_mb': 773,
                                      'idle_rss_mb': 293,
                                      'wer': 0.147},
                    'fixtures-10': {'words': 1201, 'seconds': 102.5, 'peak_rss_mb': 784, 'idle_rss_mb': 293},
                    'fixtures-60': {'words': 7410, 'seconds': 579.4, 'peak_rss_mb': 3546, 'idle_rss_mb': 293}},
 'whisperx_api': {'sample.wav': {'wer': 0.1235, 'words': 73, 'seconds': 6.34},
                  'jfk.flac': {'wer': 0.0, 'words': 22, 'seconds': 4.08},
                  'word timings': {'matched': '13/13', 'median_ms': 6, 'mean_ms': 69, 'p90_ms': 173},
                  'referenced-10': {'words': 1326,
                                    'seconds': 105.6,
                                    'peak_rss_mb': 1053,
                                    'idle_rss_mb': 316,
                                    'wer': 0.1221},
                  'fixtures-10': {'words': 1140, 'seconds': 92.4, 'peak_rss_mb': 1031, 'idle_rss_mb': 316},
                  'fixtures-60': {'words': 7150, 'seconds': 495.7, 'peak_rss_mb': 1831, 'idle_rss_mb': 316}}}


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return float(jiwer.wer(normalized(reference), normalized(hypothesis)))


def stm_text(name: str) -> str:
    lines = (FIXTURES / name).read_text().splitlines()
    return " ".join(" ".join(line.split()[5:]) for line in lines if line.strip() and not line.startswith(";;"))


def referenced_parts() -> list[tuple[Clip, str]]:
    """The fixtures with a reference transcript of their whole speech: sample.wav and jfk.flac, each with its text."""
    return [(Clip("sample", decode("sample.wav")), stm_text("sample.stm")), (Clip("jfk", decode("jfk.flac")), JFK_TEXT)]


def referenced_recording(seconds: float) -> tuple[Clip, str]:
    """sample.wav and jfk.flac in turn with 0.5 s pauses, whole clips only, up to `seconds`; with its reference."""
    parts = referenced_parts()
    pieces: list[np.ndarray] = []
    words: list[str] = []
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    total = 0.0
    index = 0
    while True:
        clip, text = parts[index % 2]
        if total + clip.seconds > seconds:
            break
        pieces += [clip.samples, gap]
        words.append(text)
        total += clip.seconds + 0.5
        index += 1
    return Clip(f"referenced {seconds / 60:g}-minute", np.concatenate(pieces)), " ".join(words)


def fixtures_recording(seconds: float) -> Clip:
    """bench_whisperx's long recording: sample, dev00, dev01, jfk, stereo_diarization repeated, 0.5 s pauses."""
    clips = [Clip(name, decode(name)) for name in ("sample.wav", "dev00.wav", "dev01.wav", "jfk.flac", "stereo_diarization.wav")]
    return join(clips, f"{seconds / 60:g}-minute", limit=seconds)


def copies(clip: Clip, count: int) -> Clip:
    return Clip(f"{count} x {clip.name}", np.concatenate([clip.samples] * count))


@contextmanager
def service(module: str, env: dict[str, str], tmp: Path) -> Iterator[tuple[httpx.Client, int]]:
    port = free_port()
    full = {
        "UVICORN_HOST": "127.0.0.1", "UVICORN_PORT": str(port), "WHISPER__CPU_THREADS": str(THREADS),
        "WHISPER__INFERENCE_DEVICE": "cpu", "LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1", "HF_TOKEN": "",
        "DATA_DIR": str(tmp / f"data-{port}"), "JOBS_WORKERS": "0", **env,
    }
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    with server_process(
        python_module(module), health_url=f"{base}/health/ready", env=full, log_name=f"bench-answers-{module}", timeout=300
    ) as process, httpx.Client(base_url=base, timeout=7200) as client:
        yield client, process.pid


def transcribe(client: httpx.Client, module: str, path: Path, words: bool = False) -> tuple[str, list[dict], float]:
    """(text, timed words, seconds) through the OpenAI route (verbose_json)."""
    data: dict[str, object] = {"response_format": "verbose_json"}
    if words:
        data["timestamp_granularities[]"] = ["word", "segment"]
    started = time.perf_counter()
    with path.open("rb") as audio:
        response = client.post("/v1/audio/transcriptions", files={"file": (path.name, audio)}, data=data)
    seconds = time.perf_counter() - started
    response.raise_for_status()
    body = response.json()
    return body["text"], body.get("words") or [], seconds


def measure(module: str, env: dict[str, str], long: bool) -> dict[str, object]:
    from tests.whisperx_api.synth import boundary_errors, build_clip
    from tests.whisperx_api.synth import write_wav as write_samples

    results: dict[str, object] = {"service": module, "env": env}
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        referenced, reference = referenced_recording(600)
        ten = fixtures_recording(600)
        recordings = {"referenced-10": write_wav(referenced, tmp), "fixtures-10": write_wav(ten, tmp)}
        if long:
            recordings["fixtures-60"] = write_wav(copies(ten, 6), tmp)
        with service(module, env, tmp) as (client, _):
            for name, text in (("sample.wav", stm_text("sample.stm")), ("jfk.flac", JFK_TEXT)):
                said, _, seconds = transcribe(client, module, FIXTURES / name)
                results[name] = {"wer": round(wer(text, said), 4), "words": len(said.split()), "seconds": round(seconds, 2)}
                print(name, results[name], flush=True)
            samples, truth = build_clip()
            _, words, _ = transcribe(client, module, write_samples(samples, tmp / "words.wav"), words=True)
            errors = sorted(boundary_errors(truth, words))
            results["word timings"] = {
                "matched": f"{len(errors) // 2}/{len(truth)}",
                "median_ms": round(float(np.median(errors)) * 1000) if errors else None,
                "mean_ms": round(float(np.mean(errors)) * 1000) if errors else None,
                "p90_ms": round(errors[int(0.9 * (len(errors) - 1))] * 1000) if errors else None,
            }
            print("word timings", results["word timings"], flush=True)
        for name, path in recordings.items():
            with service(module, env, tmp) as (client, pid):
                idle = peak_rss_mb(pid)
                said, _, seconds = transcribe(client, module, path)
                entry: dict[str, object] = {
                    "words": len(said.split()), "seconds": round(seconds, 1), "peak_rss_mb": round(peak_rss_mb(pid)),
                    "idle_rss_mb": round(idle),
                }
                if name == "referenced-10":
                    entry["wer"] = round(wer(reference, said), 4)
                results[name] = entry
                print(name, entry, flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--service", choices=["whisper_faster", "whisperx_api"], action="append")
    parser.add_argument("--long", action="store_true", help="also the 60-minute recording (six copies of the 10-minute)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the services")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    results = [measure(module, env, args.long) for module in args.service or ["whisper_faster", "whisperx_api"]]
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

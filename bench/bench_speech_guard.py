"""The hallucination guard (issue 22): what both services answer on audio without speech, per path, before and after;
WER and words on the speech set; what the guard costs per request; and the candidates measured on the engine itself.

    python -m bench.bench_speech_guard [--before REF] [--after REF] [--repeat 3] [--parts table,corpus,speech,cost,candidates]
    python -m bench.bench_speech_guard --render     # the docs section again from the cached results, measuring nothing

`--before` (default: the commit the guard started from) and `--after` (default HEAD) are checked out with `git archive`
into a temporary folder and served from there, so the figures are those commits' code, not a working tree's. Parts:

- `table`: the issue's inputs (30 s of digital silence, pink noise, 50 Hz hum, synthetic plucked notes) on every path:
  whisper-faster's synchronous route, SSE stream, job and live session (a manual commit), whisperx's `/transcribe`,
  OpenAI route, SSE stream and job;
- `corpus`: the whole non-speech corpus (tests/non_speech.py, 30 s clips), tuning and held-back parts apart: after on
  every path, before on the synchronous routes;
- `speech`: WER and words on jfk, sample.wav, dev00, dev01 and the 10-minute recording (bench.speech_set), medians;
- `cost`: 30 s speech clips with the guard and with `hallucination_guard=false`, rounds interleaved, medians; and the
  guard's own work (speech gate over the clip, text checks) timed in this process;
- `candidates`: on faster-whisper directly (the service's decoding options), each way to keep invented text out.

Each part's results are cached (`.cache/speech-guard/results.json`) with its run (time, commits, load), so parts run
apart are shown with the run each comes from.

The machine is shared with other work: every time is a median over rounds taken in turn, and the load is recorded.
"""
from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.report import table, write_section
from bench.speech_set import FILES, LONG, references, wer, word_count
from tests.non_speech import HELD_BACK, TUNING, corpus, write_corpus
from tests.repeats import longest_repeat
from tests.support import ARTIFACTS, ROOT, free_port, python_module, server_process

STARTED_FROM = "19ada1147bc733b1bc7f8e0290e6cd50c5573406"
"""The commit before the guard (issue 22 was taken up there)."""
THREADS = 2
TABLE_INPUTS = ("digital silence", "pink noise -35 dBFS", "50 Hz hum", "synthetic plucked notes")
SERVICES = {"whisper-faster": "whisper_faster", "whisperx": "whisperx_api"}
PATHS = {
    "whisper-faster": ("sync", "sse", "job", "live"),
    "whisperx": ("/transcribe", "sync", "sse", "job"),
}
CACHE = ROOT / ".cache" / "speech-guard"
SERVER_PIDS: dict[str, int] = {}
"""The process serving each client's base URL (for its CPU time)."""


# -- serving a commit ----------------------------------------------------------------------------------------------


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        yield tree


@contextmanager
def serve(tree: Path, service: str, label: str) -> Iterator[httpx.Client]:
    port = free_port()
    env = {
        "PYTHONPATH": ":".join(str(tree / part) for part in ("common", "whisper-faster", "whisperx")),
        "UVICORN_HOST": "127.0.0.1", "UVICORN_PORT": str(port), "WHISPER__CPU_THREADS": str(THREADS),
        "WHISPER__INFERENCE_DEVICE": "cpu", "LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1", "HF_TOKEN": "",
        "DATA_DIR": str(tree / f"data-{service}-{port}"), "MAX_CONCURRENCY": "1", "MAX_QUEUE": "64",
        "REALTIME_MAX_LAG_SECONDS": "600", "REALTIME_MAX_LOAD": "10", "REALTIME_MAX_CPU": "10",
    }
    base = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    with server_process(python_module(SERVICES[service]), health_url=f"{base}/health/ready", env=env, cwd=tree,
                        log_name=f"bench-guard-{service}-{label}", timeout=300) as process, \
            httpx.Client(base_url=base, timeout=3600) as client:
        SERVER_PIDS[base] = process.pid
        yield client


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (from /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the paths -------------------------------------------------------------------------------------------------------


def batch_rows(client: httpx.Client) -> float:
    """Rows the service's batch scheduler has run so far, every op (encode, generate, align) together, from /metrics:
    the work a request made the model do, which a shared machine's load does not move."""
    text = client.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if "_batch_rows_sum{" in line)


def sync(client: httpx.Client, path: Path, **fields: str) -> str:
    with path.open("rb") as audio:
        response = client.post("/v1/audio/transcriptions", files={"file": (path.name, audio)}, data=fields)
    response.raise_for_status()
    return str(response.json()["text"])


def transcribe(client: httpx.Client, path: Path, **fields: str) -> str:
    with path.open("rb") as audio:
        response = client.post("/transcribe", files={"file": (path.name, audio)}, data=fields)
    response.raise_for_status()
    return " ".join(segment["text"] for segment in response.json()["segments"])


def sse(client: httpx.Client, path: Path, **fields: str) -> str:
    with path.open("rb") as audio, client.stream("POST", "/v1/audio/transcriptions", files={"file": (path.name, audio)},
                                                 data={"stream": "true", **fields}) as response:
        response.raise_for_status()
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    return str(events[-1].get("text", "")) if events else ""


def job(client: httpx.Client, path: Path, **fields: str) -> str:
    with path.open("rb") as audio:
        response = client.post("/v1/jobs", files={"file": (path.name, audio)}, data=fields)
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        state = client.get(f"/v1/jobs/{job_id}").json()
        if state["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.2)
    if state["status"] != "succeeded":
        return f"<job {state['status']}>"
    return str(client.get(f"/v1/jobs/{job_id}/result", params={"response_format": "json"}).json()["text"])


def live(client: httpx.Client, path: Path, **fields: str) -> str:
    """A live session: the clip appended and committed by hand (a clip over REALTIME_MAX_UTTERANCE_SECONDS is cut into
    utterances by the session), then jfk committed as a marker (finals come in commit order): the `completed` texts of
    the clip's utterances, or "(no completed)"."""
    from faster_whisper.audio import decode_audio
    from websockets.sync.client import connect

    url = str(client.base_url).replace("http://", "ws://") + "/v1/realtime?intent=transcription"

    def pcm(samples: np.ndarray) -> list[str]:
        data = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
        return [base64.b64encode(data[i:i + 48000]).decode() for i in range(0, len(data), 48000)]

    marker = decode_audio(str(ROOT.parent / "shared" / "fixtures" / "audio" / "jfk.flac"), sampling_rate=24000)
    completed: dict[str, str] = {}
    committed: list[str] = []
    with connect(url, max_size=None, open_timeout=60) as socket:
        socket.recv(timeout=60)
        transcription = {"language": "en", **({"hallucination_guard": False} if fields.get("hallucination_guard") == "false"
                                              else {})}
        socket.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": transcription, "turn_detection": None}}}}))
        for chunk in pcm(decode_audio(str(path), sampling_rate=24000)):
            socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        socket.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))  # the clip's end
        clip_items: list[str] | None = None
        updates = 0
        for chunk in pcm(marker):
            socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        while clip_items is None or len(committed) <= len(clip_items) or committed[-1] not in completed:
            event = json.loads(socket.recv(timeout=600))
            if event["type"] == "input_audio_buffer.committed":
                committed.append(event["item_id"])
            elif event["type"] == "session.updated":
                updates += 1
                if updates == 2:  # the first answers the configuration
                    clip_items = list(committed)
            elif event["type"] == "conversation.item.input_audio_transcription.completed":
                completed[event["item_id"]] = event["transcript"]
            elif event["type"] in ("error", "conversation.item.input_audio_transcription.failed"):
                return f"<{event['type']}: {event.get('error', {}).get('code')}>"
    texts = [completed[item] for item in clip_items if item in completed]
    return " ".join(texts) if texts else "(no completed)"


PATH_CALLS: dict[str, Callable[..., str]] = {"sync": sync, "sse": sse, "job": job, "live": live, "/transcribe": transcribe}


def shown(text: str) -> str:
    text = " ".join(text.split())
    if text == "(no completed)":
        return "no `completed`"
    return f'"{text[:60]}{"…" if len(text) > 60 else ""}"' if text else '""'


# -- parts -------------------------------------------------------------------------------------------------------------


def run_table(trees: dict[str, Path], clips: dict[str, Path]) -> str:
    rows = []
    for service, paths in PATHS.items():
        for label, tree in trees.items():
            with serve(tree, service, label) as client:
                for path_name in paths:
                    rows.append([service, path_name, label,
                                 *(shown(PATH_CALLS[path_name](client, clips[name])) for name in TABLE_INPUTS)])
    rows.sort(key=lambda row: (row[0], list(PATHS[row[0]]).index(row[1]), row[2] != "before"))
    return table(["service", "path", "code", *TABLE_INPUTS], rows)


def run_corpus(trees: dict[str, Path], clips: dict[str, Path]) -> tuple[str, dict[str, Any]]:
    parts = {clip.name: clip.part for clip in corpus()}
    found: dict[tuple[str, str, str], list[str]] = {}
    for service, paths in PATHS.items():
        for label, tree in trees.items():
            with serve(tree, service, label) as client:
                for path_name in (paths if label == "after" else paths[:1]):
                    for name, path in clips.items():
                        text = PATH_CALLS[path_name](client, path)
                        if text.strip() and text != "(no completed)":
                            found.setdefault((service, path_name, label), []).append(f"{name}: {shown(text)}")
                        found.setdefault((service, path_name, label), [])
    rows = []
    for (service, path_name, label), texts in sorted(found.items()):
        counts = []
        for part in (TUNING, HELD_BACK):
            total = sum(1 for name in clips if parts[name] == part)
            with_text = sum(1 for text in texts if parts[text.split(":")[0]] == part)
            counts.append(f"{with_text}/{total}")
        rows.append([service, path_name, label, *counts, "; ".join(texts[:3]) + (" …" if len(texts) > 3 else "")])
    return table(["service", "path", "code", "tuning clips with text", "held-back clips with text", "examples"], rows), {
        "/".join(key): value for key, value in found.items()}


def run_speech(trees: dict[str, Path], folder: Path, repeat: int, long_repeat: int) -> tuple[str, dict[str, Any]]:
    from bench.speech_set import file_samples
    from bench.whisperx_clips import Clip, write_wav

    refs = references()
    paths = {name: write_wav(Clip(name.replace(".", "-"), file_samples(name)), folder) for name in (*FILES, LONG)}
    measured: dict[str, dict[str, Any]] = {}
    variants = {"before": {}, "after": {}, "after, guard off": {"hallucination_guard": "false"}}
    for service in PATHS:
        call = transcribe if service == "whisperx" else sync
        for label, tree in trees.items():
            with serve(tree, service, label) as client:
                for variant, fields in variants.items():
                    if not variant.startswith(label):
                        continue
                    for name, path in paths.items():
                        runs = []
                        for _ in range(long_repeat if name == LONG else repeat):
                            started = time.perf_counter()
                            text = call(client, path, **fields)
                            runs.append((wer(refs[name], text), word_count(text), time.perf_counter() - started,
                                         longest_repeat(text)[0]))
                        measured[f"{service}/{variant}/{name}"] = {
                            "wer": statistics.median(r[0] for r in runs), "words": statistics.median(r[1] for r in runs),
                            "seconds": statistics.median(r[2] for r in runs), "longest_repeat": max(r[3] for r in runs),
                            "runs": runs,
                        }
    rows = []
    for service in PATHS:
        for name in paths:
            before, after, raw = (measured[f"{service}/{variant}/{name}"] for variant in variants)
            change = (after["words"] - before["words"]) / before["words"] * 100 if before["words"] else 0.0
            rows.append([service, name, f"{before['wer']:.3f}", f"{after['wer']:.3f}", f"{raw['wer']:.3f}",
                         f"{after['wer'] - before['wer']:+.3f}", f"{before['words']:g}", f"{after['words']:g}",
                         f"{raw['words']:g}", f"{change:+.1f} %",
                         f"{before['seconds']:.1f} / {after['seconds']:.1f} / {raw['seconds']:.1f}",
                         f"{before['longest_repeat']} / {after['longest_repeat']} / {raw['longest_repeat']}"])
    return table(["service", "audio", "WER before", "WER after", "WER after, guard off", "WER change",
                  "words before", "words after", "words after, guard off", "words change",
                  "seconds before / after / off", "longest repeat before / after / off"], rows), measured


def run_cost(trees: dict[str, Path], repeat: int) -> tuple[str, dict[str, Any]]:
    """Per 30 s clip: the request with the guard and without (wall time and the server's CPU time, rounds in
    alternating order), and the guard's own work, in CPU time of this process's thread: the speech gate over the clip
    (the VAD the guard adds; without the guard a clip of 30 s or less is one window and runs no VAD) and the text
    checks over the clip's segments. CPU times are what a shared machine does not distort."""
    from whisper_common.speech_gate import speech_regions
    from whisper_common.speech_guard import SegmentGuard
    from whisper_common.transcript import Segment, Word
    from whisper_common.uploads import decode_audio

    clips = {name: ROOT.parent / "shared" / "fixtures" / "audio" / name for name in ("sample.wav", "dev00.wav", "dev01.wav")}
    rows, measured = [], {}
    for service in PATHS:
        with serve(trees["after"], service, "after") as client:
            pid = SERVER_PIDS[str(client.base_url).rstrip("/")]
            for name, path in clips.items():
                sync(client, path)  # warm-up
                runs: dict[str, list[tuple[float, float]]] = {"on": [], "off": []}
                rows_decoded: dict[str, list[float]] = {"on": [], "off": []}
                for round_ in range(repeat):
                    for setting in (("on", "off") if round_ % 2 == 0 else ("off", "on")):
                        decoded, cpu, started = batch_rows(client), cpu_seconds(pid), time.perf_counter()
                        sync(client, path, **({} if setting == "on" else {"hallucination_guard": "false"}))
                        runs[setting].append((time.perf_counter() - started, cpu_seconds(pid) - cpu))
                        rows_decoded[setting].append(batch_rows(client) - decoded)
                with path.open("rb") as audio:
                    body = client.post("/v1/audio/transcriptions", files={"file": (path.name, audio)}, data={
                        "response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]}).json()
                samples = decode_audio(str(path)).samples
                gate, checks = [], []
                for _ in range(repeat):
                    started = time.thread_time()
                    speech_regions(samples)
                    gate.append(time.thread_time() - started)
                    started = time.thread_time()
                    guard = SegmentGuard(duration=len(samples) / 16000)
                    for item in body["segments"]:
                        guard.check(Segment(id=0, start=item["start"], end=item["end"], text=item["text"], words=[
                            Word(w["word"], w["start"], w["end"]) for w in body.get("words", [])
                            if item["start"] <= w["start"] < item["end"]]))
                    checks.append(time.thread_time() - started)
                on_wall, on_cpu = (statistics.median(run[index] for run in runs["on"]) for index in (0, 1))
                off_wall, off_cpu = (statistics.median(run[index] for run in runs["off"]) for index in (0, 1))
                # whisperx runs its VAD with the guard or without it (the gate only renews Silero's state): there the
                # guard's own work is the text checks.
                own = statistics.median(checks) + (statistics.median(gate) if service == "whisper-faster" else 0.0)
                measured[f"{service}/{name}"] = {"runs": runs, "gate_cpu": gate, "checks_cpu": checks,
                                                  "rows": rows_decoded}
                rows.append([service, name, " / ".join(f"{statistics.median(rows_decoded[k]):g}" for k in ("off", "on")),
                             f"{off_wall:.2f} / {on_wall:.2f}", f"{(on_wall - off_wall) / off_wall * 100:+.0f} %",
                             f"{off_cpu:.2f} / {on_cpu:.2f}", f"{(on_cpu - off_cpu) / off_cpu * 100:+.0f} %",
                             f"{statistics.median(gate) * 1000:.0f} ms", f"{statistics.median(checks) * 1000:.1f} ms",
                             f"{own / on_cpu * 100:.1f} %"])
    return table(["service", "30 s clip", "rows decoded, off / on", "request s, guard off / on", "change",
                  "server CPU s, off / on", "change",
                  "speech gate CPU", "text checks CPU", "guard / request CPU"], rows), measured


def run_candidates(clips: dict[str, Path], folder: Path) -> tuple[str, dict[str, Any]]:
    """faster-whisper directly, with whisper-faster's decoding options (beam 5, temperature fallback)."""
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import get_compression_ratio

    from bench.speech_set import file_samples
    from whisper_common.model_catalog import embedded_model_dir
    from whisper_common.speech_gate import speech_only
    from whisper_common.speech_guard import SegmentGuard
    from whisper_common.transcript import Segment
    from whisper_common.uploads import decode_audio

    model = WhisperModel(str(embedded_model_dir()), device="cpu", compute_type="int8", cpu_threads=THREADS)
    base = {"language": "en", "beam_size": 5, "temperature": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)}

    def decode(samples: np.ndarray, **options: Any) -> list[Any]:
        return list(model.transcribe(samples, **{**base, **options})[0])

    def guarded(samples: np.ndarray) -> list[Any]:
        from faster_whisper.transcribe import restore_speech_timestamps

        speech, regions = speech_only(samples)
        if not regions:
            return []
        guard, kept = SegmentGuard(duration=len(samples) / 16000), []
        for item in restore_speech_timestamps(model.transcribe(speech, **base)[0], regions, 16000):
            if guard.check(Segment(id=0, start=item.start, end=item.end, text=item.text,
                                   no_speech_prob=item.no_speech_prob, avg_logprob=item.avg_logprob)) is not None:
                kept.append(item)
        return kept

    candidates: dict[str, Callable[[np.ndarray], list[Any]]] = {
        "today: no-speech rule (no-speech prob > 0.6 and log-prob < -1)": decode,
        "no-speech prob > 0.6 alone (log_prob_threshold=None)": lambda s: decode(s, log_prob_threshold=None),
        "compression ratio: drop segments over 2.4": lambda s: [x for x in decode(s) if get_compression_ratio(x.text) <= 2.4],
        "faster-whisper's vad_filter (Silero, state carried)": lambda s: decode(s, vad_filter=True),
        "the guard: speech gate (state renewed) + text checks": guarded,
    }
    refs = references()
    audio = {name: decode_audio(str(path)).samples for name, path in clips.items()}
    parts = {clip.name: clip.part for clip in corpus()}
    speech = {name: file_samples(name) for name in (*FILES, LONG)}
    rows, measured = [], {}
    for label, run in candidates.items():
        with_text = {TUNING: 0, HELD_BACK: 0}
        started = time.perf_counter()
        for name, samples in audio.items():
            if "".join(x.text for x in run(samples)).strip():
                with_text[parts[name]] += 1
        corpus_seconds = time.perf_counter() - started
        results = {}
        started = time.perf_counter()
        for name, samples in speech.items():
            text = "".join(x.text for x in run(samples))
            results[name] = (wer(refs[name], text), word_count(text))
        speech_seconds_ = time.perf_counter() - started
        measured[label] = {"with_text": with_text, "speech": results, "corpus_seconds": corpus_seconds,
                           "speech_seconds": speech_seconds_}
        totals = {part: sum(1 for name in audio if parts[name] == part) for part in (TUNING, HELD_BACK)}
        rows.append([label, f"{with_text[TUNING]}/{totals[TUNING]}", f"{with_text[HELD_BACK]}/{totals[HELD_BACK]}",
                     *(f"{results[name][0]:.3f} ({results[name][1]})" for name in speech),
                     f"{corpus_seconds:.0f} / {speech_seconds_:.0f}"])
    return table(["candidate", "tuning clips with text", "held-back clips with text",
                  *(f"WER (words) {name}" for name in speech), "seconds: corpus / speech"], rows), measured


# -- main ------------------------------------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=STARTED_FROM)
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--long-repeat", type=int, default=1)
    parser.add_argument("--parts", default="table,corpus,speech,cost,candidates")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: write the docs section from the cached results (each part's run noted)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    CACHE.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    cached = CACHE / "results.json"
    if cached.is_file():
        results = json.loads(cached.read_text())
    if args.render:
        write_section("speech-guard", "Hallucination guard: no invented words (issue 22)", render(results, args))
        return 0
    after = subprocess.run(["git", "rev-parse", "--short", args.after], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp, checkout(args.before) as before, checkout(args.after) as after_tree:
        trees = {"before": before, "after": after_tree}
        clips = write_corpus(Path(tmp) / "corpus", 30.0)
        for part in parts:
            load, started = load_average(), utc_now()
            print(f"== {part} (load {load})", flush=True)
            if part == "table":
                results["table"] = run_table(trees, clips)
            elif part == "corpus":
                results["corpus"], results["corpus_texts"] = run_corpus(trees, clips)
            elif part == "speech":
                results["speech"], results["speech_runs"] = run_speech(trees, Path(tmp), args.repeat, args.long_repeat)
            elif part == "cost":
                results["cost"], results["cost_runs"] = run_cost(trees, max(args.repeat, 5))
            elif part == "candidates":
                results["candidates"], results["candidate_runs"] = run_candidates(clips, Path(tmp))
            results.setdefault("runs", {})[part] = (f"{started[:-4]}-{utc_now()[11:]}, before {args.before[:7]}, "
                                                    f"after {after}, load {load} -> {load_average()}")
            cached.write_text(json.dumps(results, indent=1, default=str))
            print(results[part], flush=True)
    write_section("speech-guard", "Hallucination guard: no invented words (issue 22)", render(results, args))
    return 0


def utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def criteria(results: dict[str, Any]) -> str:
    """The issue's criterion 3 read off the speech part: WER within 0.01 of before's (a lower one keeps it) on jfk,
    sample.wav and the 10-minute recording, words within 1 % on the 10-minute recording; each also against the same
    commit with `hallucination_guard=false` (the guard's own effect, without the decoding changes made beside it)."""
    runs = results.get("speech_runs")
    if not runs:
        return ""
    lines = []
    for service in PATHS:
        for name in ("jfk.flac", "sample.wav", LONG):
            after = runs[f"{service}/after/{name}"]
            parts = []
            for base_label in ("before", "after, guard off"):
                base = runs[f"{service}/{base_label}/{name}"]
                change = after["wer"] - base["wer"]
                words = (after["words"] - base["words"]) / base["words"] * 100 if base["words"] else 0.0
                wer_met = change <= 0.01
                words_met = abs(words) <= 1.0 or name != LONG
                verdict = "met" if wer_met and words_met else "**not met**"
                if wer_met and not words_met and words > 0 and change <= 0:
                    verdict = "**not met**, upwards: more words, at a lower WER"
                parts.append(f"against {base_label}: WER {change:+.3f}, words {words:+.1f} % ({verdict})")
            lines.append(f"- {service}, {name}: " + "; ".join(parts))
    return ("**Criterion 3** (WER within 0.01 of before's on jfk, sample.wav and the 10-minute recording, a lower one "
            "included; words within 1 % on the 10-minute recording):\n\n" + "\n".join(lines))


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    missing = "(not measured)"
    runs = results.get("runs", {})

    def run_of(part: str) -> str:
        return f"*Run: {runs[part]}.*" if part in runs else ""

    held_back = {clip.name for clip in corpus(HELD_BACK)}
    before_texts = {key: texts for key, texts in results.get("corpus_texts", {}).items() if key.endswith("/before")}
    held_back_before = "; ".join(f"{key.rsplit('/', 1)[0].replace('/', ' ', 1)}: " + (", ".join(
        text for text in texts if text.split(":")[0] in held_back) or "none") for key, texts in before_texts.items())
    return f"""
{criteria(results)}

Code compared: before = commit `{args.before[:7]}` (the guard's starting point), after = the commit named in each
part's run line, each served from a `git archive` of that commit (tiny.en, {THREADS} CPU threads,
`MAX_CONCURRENCY=1`). The machine is shared with other agents' work (the load average at each part's start and end
is in its run line); times are medians of rounds taken in turn, and only differences measured in the same part are
compared.

### What the guard does

Audio is decoded only where the speech gate (Silero VAD, its state renewed every 10 s, faster-whisper's thresholds)
finds speech; decoded text without words, or a word or phrase repeated more than four times in a row, is dropped or
cut, and a window Whisper itself judges silent is dropped on the paths that skipped faster-whisper's rule (its batched
pipeline, live sessions). On whisperx's batched decoding, speech of a window that its decoding left without a kept word
(2 s or more of the window's VAD clips in a row) is decoded again on its own. `hallucination_guard=false` gives the raw
output. Suppressions are counted in `<service>_hallucinations_suppressed_total{{reason}}`.

### The issue's table, per path (30 s clips)

{run_of('table')}

{results.get('table', missing)}

Live sessions: the clip appended and committed by hand (server VAD would not open a turn on most of these), then a
speech marker; "no `completed`" means the session sent none for the clip's item.

### The whole non-speech corpus (tests/non_speech.py, 30 s clips)

The held-back part (other seeds, levels, frequencies and melodies) was never used to choose anything; its clips are
counted in their own column.

{run_of('corpus')}

{results.get('corpus', missing)}

Held-back clips with text before the guard: {held_back_before or missing}.

### Speech is not lost: WER and words

References: jfk's published text, sample.wav's STM; the AMI excerpts and the 10-minute recording (bench.speech_set:
the fixtures repeated, as `bench.bench_whisperx` builds it) against Whisper `base`'s transcript, a pseudo-reference.
Medians of {args.repeat} requests ({args.long_repeat} for the 10-minute recording); whisper-faster samples when its
temperature fallback starts, so its runs differ.

{run_of('speech')}

{results.get('speech', missing)}

Where whisperx lost words with the guard (measured at a5dcabb: 1104 words against 1140 without it, WER +0.005), found
by listing the gate's windows of the 10-minute recording with each one's decoded text, no-speech probability and
log-probability: no window was dropped by the no-speech rule (every no-speech probability was below 0.58, every
average log-probability above -0.56), nor by the other text checks but one loop. The loss was in the batched decoding
itself: a window is decoded once, at temperature 0, without timestamps, and on speech joined from several places tiny.en
can write one part and stop. Each window holding jfk's sentence followed by stereo_diarization.wav's 5 s piece came back
as jfk's 22 words only (with the guard four such windows, without it two: where the windows fall depends on the VAD's
probabilities, which the gate's renewed Silero state shifts a little), and one window (dev01's end, jfk, the 5 s piece)
looped on "Wasn't he username?", which the guard cut, jfk's sentence under the loop with it. With the guard, a run of a
window's VAD clips at least 2 s long that no kept word touches is now decoded again on its own (whisperx_api.pipeline
`unheard_speech`); the raw output (`hallucination_guard=false`) is left as the engine gives it, so the guard's rows can
now have more words than the guard-off rows. On the 10-minute recording that step decodes six parts again (in two
extra ops, one per group of windows that needs it; listed on its windows directly), and the request took longer with the guard than without (the
seconds column); on jfk, sample.wav, dev00 and dev01 it finds nothing to decode again (their windows checked
directly). whisper-faster's 10-minute row misses the 1 % bound upwards too (more words with the guard than without, at a lower WER): its guard decodes the gate's speech with
faster-whisper's sequential decoding, where without the guard every sample is decoded. Aligned word by word against
the reference (jiwer, the same requests again at 7a79624, same word counts and WERs as the table), the added words are
right ones, not invented: whisper-faster with the guard / without: 1084 / 1032 words right, 137 / 166 substituted,
71 / 94 left out, 32 / 40 inserted; whisperx: 997 / 958 right, 160 / 138 substituted, 135 / 196 left out, 28 / 44
inserted.

### What the guard costs per request (30 s clips, OpenAI route)

Each clip requested with the guard on and with `hallucination_guard=false` in alternating order ({max(args.repeat, 5)}
rounds, medians): wall time and the server process's CPU time (all its threads, from /proc). The guard's own work is
timed apart, in CPU time of one thread: the speech gate's VAD over the clip and the text checks over the clip's
segments. The last column, against the target of at most 2 %: for whisper-faster the VAD and the checks (without the
guard a clip of 30 s or less is one window and runs no VAD; a longer one runs it anyway, to cut its windows), for
whisperx the checks alone (its pipeline runs the VAD with or without the guard; the gate only renews Silero's state).
With the guard the decoder also skips what is not speech, which is why a request can cost less with it than without.
"Rows decoded" is the work a request gave the model (the batch scheduler's rows, encode, generate and align together,
from the service's `/metrics`; medians): where it is the same with and without the guard, the model did the same work
and a change in the times is the machine's noise plus the guard's own work of the last column.

{run_of('cost')}

{results.get('cost', missing)}

### The candidates, measured on faster-whisper directly

whisper-faster's decoding options (beam 5, temperature fallback 0-1), the non-speech corpus (30 s clips) and the speech
set; one run each.

{run_of('candidates')}

{results.get('candidates', missing)}
"""


if __name__ == "__main__":
    raise SystemExit(main())

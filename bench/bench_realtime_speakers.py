"""What speaker labels cost a live session: the same recordings replayed at real-time pace over `/v1/realtime` to one
whisper-faster (embedded tiny.en, REALTIME_SPEAKERS on, one voiceprint enrolled), each session with labels and again
with `transcription.speakers: "off"`, in alternating order, so both see the same server and the same machine load.

    python -m bench.bench_realtime_speakers [--rounds 2] [--write]

Figures per mode, over every utterance of every round:
- commit → completed: from the moment the client received `input_audio_buffer.committed` to `completed` (the work
  done after the utterance is over: the final decode, and with labels its d-vector and matching);
- end of utterance → completed: as bench_realtime measures it (from the chunk holding the last voiced audio);
- the server's CPU seconds per second of audio (what the admission's CPU check learns per session).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
import wave
from dataclasses import dataclass, field

import httpx
import numpy as np
import websockets

from bench.bench_realtime import CHUNK_SECONDS, PREFIX_MS, RATE, SILENCE_MS, cpu_seconds, p, pcm16, send_paced
from bench.report import table, write_section
from tests.service_servers import start_service
from tests.support import FIXTURES

RECORDINGS = ("dev00.wav", "dev01.wav", "sample.wav", "jfk.flac")
KEY = "bench-speakers-key"


@dataclass
class Session:
    commit_latencies: list[float] = field(default_factory=list)
    end_latencies: list[float] = field(default_factory=list)
    speakers: list[str | None] = field(default_factory=list)
    error: str | None = None


async def replay(url: str, pcm: bytes, speakers: str) -> Session:
    """One session replaying `pcm` at real time with `transcription.speakers` = `speakers`."""
    session = Session()
    sent_at: list[float] = []
    items: dict[str, dict] = {}
    async with websockets.connect(url, max_size=None, open_timeout=60,
                                  additional_headers={"Authorization": f"Bearer {KEY}"}) as socket:
        first = json.loads(await socket.recv())
        if first["type"] == "error":
            session.error = first["error"]["code"]
            return session
        await socket.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
            "input": {"transcription": {"model": "whisper-1", "language": "en", "speakers": speakers},
                      "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": PREFIX_MS,
                                         "silence_duration_ms": SILENCE_MS}}}}}))
        recording_sent = asyncio.Event()

        sender = asyncio.create_task(send_paced(socket, pcm, sent_at, recording_sent))
        last_event = time.monotonic()
        try:
            while not (recording_sent.is_set() and items and all("completed" in i for i in items.values())):
                try:
                    event = json.loads(await asyncio.wait_for(socket.recv(), timeout=0.5))
                except asyncio.TimeoutError:
                    if time.monotonic() - last_event > 30:
                        session.error = "timeout waiting for events"
                        break
                    continue
                now = last_event = time.monotonic()
                kind = event["type"]
                if kind == "error":
                    session.error = event["error"]["code"]
                    continue
                if "item_id" not in event:
                    continue
                item = items.setdefault(event["item_id"], {})
                if kind == "input_audio_buffer.speech_stopped":
                    item["stopped"] = event["audio_end_ms"] - SILENCE_MS
                elif kind == "input_audio_buffer.committed":
                    item["committed"] = now
                elif kind.endswith("transcription.completed") or kind.endswith("transcription.failed"):
                    item["completed"] = now
                    session.speakers.append(event.get("speaker"))
        finally:
            sender.cancel()
    for item in items.values():
        if "completed" not in item:
            continue
        if "committed" in item:
            session.commit_latencies.append(item["completed"] - item["committed"])
        index = int(item.get("stopped", -1) / 1000 / CHUNK_SECONDS)
        if "stopped" in item and 0 <= index < len(sent_at):
            session.end_latencies.append(item["completed"] - sent_at[index])
    return session


def enrolment_clip() -> bytes:
    """MEE009 alone in dev01 (7.0-11.8 s): a voiceprint, so that labelled sessions also match the library."""
    from whisper_common.uploads import decode_audio

    samples = decode_audio(str(FIXTURES / "dev01.wav")).samples[7 * 16_000:int(11.8 * 16_000)]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def embedding_cost() -> dict[int, float]:
    """Thread CPU seconds of `SpeakerEncoder.utterance` on 1-12 s of sample.wav (median of 3)."""
    from whisper_common.speakers.encoder import SpeakerEncoder
    from whisper_common.uploads import decode_audio

    encoder = SpeakerEncoder()
    samples = decode_audio(str(FIXTURES / "sample.wav")).samples
    encoder.utterance(samples[:48_000])
    costs = {}
    for seconds in (1, 3, 6, 12):
        runs = []
        for _ in range(3):
            started = time.thread_time()
            encoder.utterance(samples[: seconds * 16_000])
            runs.append(time.thread_time() - started)
        costs[seconds] = float(np.median(runs))
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args()
    env = {"API_KEYS": KEY, "LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1", "REALTIME_SPEAKERS": "true",
           "REALTIME_MAX_LOAD": "10", "REALTIME_MAX_CPU": "10", "REALTIME_MAX_LAG_SECONDS": "60"}
    modes = {"on": "library", "off": "off"}
    commit = {mode: [] for mode in modes}
    ends = {mode: [] for mode in modes}
    cpu = {mode: [0.0, 0.0] for mode in modes}  # CPU seconds, audio seconds
    errors: list[str] = []
    labelled: set[str] = set()
    load_before = os.getloadavg()
    with start_service("whisper_faster", "bench-realtime-speakers", env) as server:
        enrolled = httpx.post(f"{server.base_url}/v1/speakers", headers={"Authorization": f"Bearer {KEY}"},
                              data={"name": "Maria"}, files=[("file", ("maria.wav", enrolment_clip(), "audio/wav"))],
                              timeout=120)
        enrolled.raise_for_status()
        url = server.base_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        pid = server.process.pid
        for round_index in range(args.rounds):
            for name in RECORDINGS:
                pcm = pcm16(name)
                order = ("on", "off") if (round_index + RECORDINGS.index(name)) % 2 == 0 else ("off", "on")
                for mode in order:
                    before = cpu_seconds(pid)
                    session = asyncio.run(replay(url, pcm, modes[mode]))
                    cpu[mode][0] += cpu_seconds(pid) - before
                    cpu[mode][1] += len(pcm) / 2 / RATE
                    commit[mode] += session.commit_latencies
                    ends[mode] += session.end_latencies
                    labelled |= {s for s in session.speakers if s} if mode == "on" else set()
                    if session.error:
                        errors.append(f"{name} {mode}: {session.error}")
                    if mode == "off" and any(session.speakers):
                        errors.append(f"{name} off: a speaker label")
                    print(name, mode, f"commit p50 {p(session.commit_latencies, 50):.3f}",
                          f"end p50 {p(session.end_latencies, 50):.3f}", session.error or "", flush=True)
                    time.sleep(1)
    load_after = os.getloadavg()
    rows = [[mode, len(commit[mode]), f"{p(commit[mode], 50):.3f}", f"{p(commit[mode], 95):.3f}",
             f"{p(ends[mode], 50):.3f}", f"{p(ends[mode], 95):.3f}", f"{cpu[mode][0] / cpu[mode][1]:.3f}"]
            for mode in modes]
    extra = {q: p(commit["on"], q) - p(commit["off"], q) for q in (50, 95)}
    body = f"""
What speaker labels add to a live session's latency (`python -m bench.bench_realtime_speakers --write`): one
whisper-faster (embedded `tiny.en`, `REALTIME_SPEAKERS=true`, one voiceprint enrolled from dev01), the recordings
{", ".join(RECORDINGS)} replayed at real-time pace (100 ms appends, server VAD 0.5 / {PREFIX_MS} ms /
{SILENCE_MS} ms), each once with labels (`transcription.speakers: "library"`) and once without (`"off"`), in
alternating order, {args.rounds} rounds. Commit → completed is from the client's receipt of
`input_audio_buffer.committed` to `completed`: the work after the utterance is over (the final decode, and with labels
the utterance's d-vector, computed in a thread of its own beside the decode, and its matching). End → completed adds
the VAD's {SILENCE_MS} ms of silence. The machine is shared with other work (load average {load_before[0]:.1f} before,
{load_after[0]:.1f} after), so compare the two modes, not the absolute figures, with other runs.

{table(["labels", "utterances", "commit → completed p50 (s)", "p95 (s)", "end → completed p50 (s)", "p95 (s)",
        "server CPU s per audio s"], rows)}

Labels add **{extra[50] * 1000:+.0f} ms** at p50 and **{extra[95] * 1000:+.0f} ms** at p95 of commit → completed.
Labels seen: {", ".join(sorted(labelled)) or "none"}. Errors: {"; ".join(errors) or "none"}.

The embedding's own cost, which load does not change: CPU time of one utterance's d-vector in this process (one BLAS
thread, median of 3), by utterance length:

{table(["utterance (s)", "CPU s"], [[seconds, f"{cost:.3f}"] for seconds, cost in embedding_cost().items()])}
"""
    print(body)
    if args.write:
        write_section("realtime-speakers", "Live sessions: what speaker labels cost", body)


if __name__ == "__main__":
    main()

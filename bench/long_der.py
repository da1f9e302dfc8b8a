"""The embedded diarizer on long, many-voice recordings: DER, its parts and the counted speakers per recording
length and voice count, and diarization time and memory per hour of audio.

`python -m bench.long_der [--write] [--only dev|held-out|cost]`. The recordings are assembled by
tests/whisperx_api/meetings.py (real voices of the fixtures and espeak-ng voices, references concatenated the same
way; see there what makes them easier or harder than a meeting). Two sets:

- **dev**: what the long-recording clustering (agglomerative.py) was tuned on: seeds 1-9, DEV_SYNTHETIC voices;
- **held-out**: scored only after tuning, never tuned on: other seeds, other lengths and voice counts, and the
  HELD_OUT_SYNTHETIC voices (other espeak-ng voices and effects); real voices are the same people as in dev (there
  are no others here), in other cuts, orders and rooms.

DER is pyannote.metrics' with a collar of 0.25 s on each side of every reference boundary (`collar=0.5`: pyannote's
collar is the whole width) and overlapped speech scored. The cost rows run the diarizer in a fresh process per
recording (the recording read from a WAV file) and report its wall time and the growth of its peak resident memory
(VmHWM) during the call. Generated recordings are cached under $TMPDIR/whisperx-long-der so reruns are cheap.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report import table, write_section
from tests.whisperx_api.meetings import (
    DEV_SYNTHETIC, HELD_OUT_SYNTHETIC, REAL_VOICES, SAMPLE_RATE, Recording, der, espeak_available, meeting,
)

CACHE = Path(tempfile.gettempdir()) / "whisperx-long-der"
R = list(REAL_VOICES)
D = [voice.name for voice in DEV_SYNTHETIC]
H = [voice.name for voice in HELD_OUT_SYNTHETIC]


@dataclass(frozen=True)
class Spec:
    key: str
    voices: list[str]
    minutes: float
    seed: int
    synthetic: tuple = ()

    def build(self) -> Recording:
        return meeting(self.voices, self.minutes * 60, self.seed, self.synthetic, name=self.key)


def dev_specs() -> list[Spec]:
    return [
        Spec("dev 10 min, 8 voices (5 real)", R[:5] + D[:3], 10, 1, DEV_SYNTHETIC),
        Spec("dev 10 min, 4 voices (3 real)", [R[0], R[2], R[5], D[3]], 10, 2, DEV_SYNTHETIC),
        Spec("dev 10 min, 6 voices (4 real)", R[:4] + D[4:6], 10, 3, DEV_SYNTHETIC),
        Spec("dev 10 min, 4 voices (4 real)", R[:4], 10, 4, DEV_SYNTHETIC),
        Spec("dev 10 min, 1 voice (MEE009)", [R[0]], 10, 5, DEV_SYNTHETIC),
        Spec("dev 10 min, 10 voices (7 real)", R + D[:3], 10, 6, DEV_SYNTHETIC),
        Spec("dev 10 min, 2 voices (2 real)", [R[1], R[4]], 10, 7, DEV_SYNTHETIC),
        Spec("dev 30 min, 6 voices (5 real)", R[1:6] + D[:1], 30, 8, DEV_SYNTHETIC),
        Spec("dev 60 min, 8 voices (6 real)", R[:6] + D[1:3], 60, 9, DEV_SYNTHETIC),
    ]


def held_out_specs() -> list[Spec]:
    return [
        Spec("held-out 10 min, 1 voice (reader-de)", [R[6]], 10, 101, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 1 voice (synthetic)", [H[0]], 10, 102, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 3 voices (2 real)", [R[3], R[5], H[1]], 10, 103, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 5 voices (3 real)", [R[0], R[4], R[6], H[2], H[3]], 10, 104, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 8 voices (6 real)", R[1:7] + H[4:6], 10, 105, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 8 voices (7 real)", R + H[:1], 10, 106, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 10 voices (4 real)", R[3:] + H, 10, 107, HELD_OUT_SYNTHETIC),
        Spec("held-out 30 min, 4 voices (3 real)", [R[1], R[2], R[5], H[3]], 30, 108, HELD_OUT_SYNTHETIC),
        Spec("held-out 30 min, 7 voices (5 real)", R[2:7] + H[1:3], 30, 109, HELD_OUT_SYNTHETIC),
        Spec("held-out 60 min, 8 voices (6 real)", R[:6] + H[4:6], 60, 110, HELD_OUT_SYNTHETIC),
    ]


def cache_stem(spec: Spec) -> Path:
    """Where `spec`'s recording is cached: keyed by the spec and by the assembling code."""
    import hashlib

    from tests.whisperx_api import meetings

    key = repr((spec.key, spec.voices, spec.minutes, spec.seed)) + Path(meetings.__file__).read_text()
    return CACHE / hashlib.sha256(key.encode()).hexdigest()[:16]


def cached(spec: Spec) -> Recording:
    """The recording of `spec` from the cache, assembling it on the first call."""
    import soundfile

    CACHE.mkdir(parents=True, exist_ok=True)
    stem = cache_stem(spec)
    wav, turns = stem.with_suffix(".wav"), stem.with_suffix(".json")
    if not (wav.exists() and turns.exists()):
        recording = spec.build()
        soundfile.write(str(wav), recording.samples, SAMPLE_RATE, subtype="FLOAT")
        turns.write_text(json.dumps(recording.turns))
    samples, _ = soundfile.read(str(wav), dtype="float32")
    return Recording(spec.key, samples, [tuple(turn) for turn in json.loads(turns.read_text())])


@dataclass(frozen=True)
class Scored:
    recording: Recording
    result: dict[str, float]
    seconds: float


def score(recordings: list[Callable[[], Recording]]) -> list[Scored]:
    from whisperx_api.diarize.base import SpeakerBounds
    from whisperx_api.diarize.embedded import EmbeddedDiarizer

    diarizer = EmbeddedDiarizer()
    scored = []
    for make in recordings:
        recording = make()
        started = time.perf_counter()
        turns = diarizer(recording.samples, SpeakerBounds())
        elapsed = time.perf_counter() - started
        result = der(recording, [(turn.start, turn.end, turn.speaker) for turn in turns])
        scored.append(Scored(recording, result, elapsed))
        print(f"{recording.name}: DER {result['der']:.1%}, {result['speakers']} / {result['reference_speakers']}, "
              f"{elapsed:.0f} s", flush=True)
    return scored


def render(scored: list[Scored]) -> str:
    rows: list[list[object]] = []
    for s in scored:
        r = s.result
        rows.append([
            s.recording.name, f"{s.recording.seconds / 60:.1f}", f"{r['der']:.1%}", f"{r['missed']:.1%}",
            f"{r['false_alarm']:.1%}", f"{r['confusion']:.1%}", f"{r['speakers']} / {r['reference_speakers']}",
            f"{s.seconds:.0f}",
        ])
    ders = [s.result["der"] for s in scored]
    within = sum(abs(s.result["speakers"] - s.result["reference_speakers"]) <= 1 for s in scored)
    rows.append(["**mean**", "", f"**{np.mean(ders):.1%}**", "", "", "",
                 f"within ±1: {within} of {len(scored)}", ""])
    return table(["recording", "min", "DER", "missed", "false alarm", "confusion", "speakers found / true",
                  "diarization s"], rows)


COST_CHILD = """
import json, sys, time
import soundfile
from bench.report import peak_rss_mb
from whisperx_api.diarize.base import SpeakerBounds
from whisperx_api.diarize.embedded import EmbeddedDiarizer
import os
diarizer = EmbeddedDiarizer()
diarizer(soundfile.read(sys.argv[2], dtype="float32")[0][: 16000 * 20], SpeakerBounds())  # load and warm up
samples = soundfile.read(sys.argv[1], dtype="float32")[0]
before = peak_rss_mb(os.getpid())
started = time.perf_counter()
turns = diarizer(samples, SpeakerBounds())
print(json.dumps({"seconds": time.perf_counter() - started, "before_mb": before,
                  "peak_mb": peak_rss_mb(os.getpid()), "speakers": len({t.speaker for t in turns})}))
"""


def cost(specs: list[Spec]) -> str:
    """Wall time and peak memory of one diarization per recording, each in a fresh process."""
    rows = []
    warm_up = str(Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "audio" / "sample.wav")
    for spec in specs:
        cached(spec)
        stem = cache_stem(spec)
        output = subprocess.run(
            [sys.executable, "-c", COST_CHILD, str(stem.with_suffix(".wav")), warm_up],
            check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
        ).stdout.strip().splitlines()[-1]
        measured = json.loads(output)
        hours = spec.minutes / 60
        rows.append([
            spec.key, f"{spec.minutes:g}", f"{measured['seconds']:.0f}", f"{measured['seconds'] / hours:.0f}",
            f"{measured['before_mb']:.0f}", f"{measured['peak_mb']:.0f}",
            f"{measured['peak_mb'] - measured['before_mb']:.0f}",
        ])
        print(rows[-1], flush=True)
    return table(["recording", "min", "diarization s", "s per hour of audio", "RSS before (MB)",
                  "peak RSS during (MB)", "growth (MB)"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md")
    parser.add_argument("--only", choices=("dev", "held-out", "cost"), help="run one part (and write nothing)")
    args = parser.parse_args()
    if not espeak_available():
        sys.exit("espeak-ng and sox are needed (make system-deps)")
    parts: dict[str, str] = {}
    if args.only in (None, "dev"):
        parts["dev"] = render(score([lambda s=s: cached(s) for s in dev_specs()]))
    if args.only in (None, "held-out"):
        parts["held-out"] = render(score([lambda s=s: cached(s) for s in held_out_specs()]))
    if args.only in (None, "cost"):
        parts["cost"] = cost([s for s in dev_specs() if s.key.startswith("dev 10 min, 8")] +
                             [s for s in dev_specs() if s.minutes >= 30])
    for title, body in parts.items():
        print(f"## {title}\n\n{body}\n")
    if args.write and args.only is None:
        write_section("diarization-long", "Diarization of long, many-voice recordings (embedded diarizer)",
                      SECTION.format(**{k.replace("-", "_"): v for k, v in parts.items()}))


SECTION = """
Recordings assembled by `tests/whisperx_api/meetings.py` from every voice found here: the seven real voices of the
fixtures (two AMI meeting speakers, two telephone speakers, J. F. Kennedy, the English and the German reader of
multilingual.mp3) and espeak-ng voices (each a voice, variant, pitch, speed and sox effects). Every utterance is
varied (speed ±5 %, spectral tilt, a synthetic room, level), turns are uneven in length and share, about a sixth
of the speaker changes overlap by 0.3-1.2 s, and the reference is every utterance's extent. **Easier than a real
meeting**: the real voices' material is 7-28 s each, so their words come back in every long recording; synthetic
voices are steadier than people; the rooms are simulated. DER: pyannote.metrics, collar 0.25 s each side, overlap
scored; no speaker count given.

Developed on (the long-recording clustering's threshold and segment length were chosen on these):

{dev}

Held out (other seeds, lengths, voice counts and synthetic voices; scored once, after tuning):

{held_out}

Cost per recording (a fresh process each, recording read from a WAV file; the encoder's windows hop 0.25 s up to
10 minutes of speech, then wider, at most 0.75 s):

{cost}
"""


if __name__ == "__main__":
    main()

"""The embedded diarizer on long, many-voice recordings: DER, its parts and the counted speakers per recording
length and voice count, and diarization time and memory per hour of audio.

`python -m bench.long_der [--write] [--only dev|held-out|held-out-2|cost]`. The recordings are assembled by
tests/whisperx_api/meetings.py (real voices of the fixtures and espeak-ng voices, references concatenated the same
way; see there what makes them easier or harder than a meeting). Three sets:

- **dev**: what the long-recording clustering (agglomerative.py) was tuned on: seeds 1-9, DEV_SYNTHETIC voices;
- **held-out** and **cost** (30 and 60 minutes, each in a fresh process, with time and memory): scored only
  after tuning, never tuned on: other seeds, other lengths and voice counts, and the HELD_OUT_SYNTHETIC voices
  (other espeak-ng voices and effects); real voices are the same people as in dev (there are no others here), in
  other cuts, orders and rooms;
- **held-out-2**: made after the first held-out set had been seen (see SECTION): other seeds and voice counts, and
  the HELD_OUT_2_SYNTHETIC voices.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report import table, write_section
from tests.whisperx_api.meetings import (
    DEV_SYNTHETIC, HELD_OUT_SYNTHETIC, REAL_VOICES, SAMPLE_RATE, Recording, SyntheticVoice, der, espeak_available,
    meeting,
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
        Spec("dev 3 min, 3 voices (2 real)", [R[0], R[3], D[2]], 3, 11, DEV_SYNTHETIC),
        Spec("dev 3 min, 1 voice (speaker91)", [R[3]], 3, 13, DEV_SYNTHETIC),
        Spec("dev 4 min, 5 voices (4 real)", [R[1], R[2], R[4], R[6], D[5]], 4, 12, DEV_SYNTHETIC),
        Spec("dev 10 min, 1 voice (MEE009)", [R[0]], 10, 5, DEV_SYNTHETIC),
        Spec("dev 10 min, 4 voices (4 real)", R[:4], 10, 4, DEV_SYNTHETIC),
        Spec("dev 10 min, 6 voices (4 real)", R[:4] + D[4:6], 10, 3, DEV_SYNTHETIC),
        Spec("dev 10 min, 8 voices (5 real)", R[:5] + D[:3], 10, 1, DEV_SYNTHETIC),
        Spec("dev 10 min, 10 voices (7 real)", R + D[:3], 10, 6, DEV_SYNTHETIC),
    ]


def held_out_specs() -> list[Spec]:
    return [
        Spec("held-out 3 min, 4 voices (3 real)", [R[2], R[4], R[5], H[5]], 3, 111, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 1 voice (reader-de)", [R[6]], 10, 101, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 5 voices (3 real)", [R[0], R[4], R[6], H[2], H[3]], 10, 104, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 8 voices (6 real)", R[1:7] + H[4:6], 10, 105, HELD_OUT_SYNTHETIC),
        Spec("held-out 10 min, 10 voices (4 real)", R[3:] + H, 10, 107, HELD_OUT_SYNTHETIC),
    ]


# A second held-out set, made after the first had been scored: other seeds, voice counts and espeak-ng voices that
# neither set used (scored once, after min_speaker_share was chosen on dev).
HELD_OUT_2_SYNTHETIC = (
    SyntheticVoice("syn-us-andy", "en-us+Andy", 45, 160, ("reverb", "25")),
    SyntheticVoice("syn-sc-annie", "en-gb-scotland+Annie", 60, 150, ("highpass", "250", "lowpass", "3600")),
    SyntheticVoice("syn-029-benjamin", "en-029+benjamin", 35, 150, ()),
    SyntheticVoice("syn-clan-david", "en-gb-x-gbclan+david", 50, 165, ("pitch", "-80", "reverb", "30")),
    SyntheticVoice("syn-nyc-belinda", "en-us-nyc+belinda", 65, 170, ("reverb", "15")),
    SyntheticVoice("syn-rp-caleb", "en-gb-x-rp+caleb", 40, 145, ("lowpass", "4500")),
)
H2 = [voice.name for voice in HELD_OUT_2_SYNTHETIC]


def held_out_2_specs() -> list[Spec]:
    return [
        Spec("held-out 2, 10 min, 6 voices (3 real)", [R[1], R[3], R[5], *H2[:3]], 10, 201, HELD_OUT_2_SYNTHETIC),
        Spec("held-out 2, 10 min, 7 voices (5 real)", [*R[2:7], *H2[3:5]], 10, 202, HELD_OUT_2_SYNTHETIC),
        Spec("held-out 2, 10 min, 9 voices (5 real)", [*R[:5], *H2[1:5]], 10, 203, HELD_OUT_2_SYNTHETIC),
        Spec("held-out 2, 10 min, 9 voices (3 real)", [R[0], R[4], R[6], *H2], 10, 204, HELD_OUT_2_SYNTHETIC),
        Spec("held-out 2, 5 min, 2 voices (1 real)", [R[2], H2[5]], 5, 205, HELD_OUT_2_SYNTHETIC),
    ]


def cost_specs() -> list[Spec]:
    """Held-out recordings of 30 and 60 minutes, diarized in a process of their own (time and memory)."""
    return [
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


def _row(spec: Spec, recording: Recording, turns: list, seconds: float, memory: tuple[float, float] | None) -> dict:
    result = der(recording, turns)
    row = {"name": spec.key, "minutes": recording.seconds / 60, "seconds": seconds, **result}
    if memory is not None:
        row["before_mb"], row["peak_mb"] = memory
    print(f"{spec.key}: DER {result['der']:.1%}, {result['speakers']} / {result['reference_speakers']}, "
          f"{seconds:.0f} s", flush=True)
    return row


def score(specs: list[Spec]) -> Iterator[dict]:
    """Each recording diarized in this process, no speaker count given."""
    from whisperx_api.diarize.base import SpeakerBounds
    from whisperx_api.diarize.embedded import EmbeddedDiarizer

    diarizer = EmbeddedDiarizer()
    rows = []
    for spec in specs:
        recording = cached(spec)
        started = time.perf_counter()
        turns = diarizer(recording.samples, SpeakerBounds())
        elapsed = time.perf_counter() - started
        rows.append(_row(spec, recording, [(t.start, t.end, t.speaker) for t in turns], elapsed, None))
        yield rows[-1]


COST_CHILD = """
import json, os, sys, time
import soundfile
from bench.report import peak_rss_mb
from whisperx_api.diarize.base import SpeakerBounds
from whisperx_api.diarize.embedded import EmbeddedDiarizer
diarizer = EmbeddedDiarizer()
diarizer(soundfile.read(sys.argv[1], dtype="float32")[0][: 16000 * 30], SpeakerBounds())  # load and warm up
samples = soundfile.read(sys.argv[1], dtype="float32")[0]
before = peak_rss_mb(os.getpid())
started = time.perf_counter()
turns = diarizer(samples, SpeakerBounds())
print(json.dumps({"seconds": time.perf_counter() - started, "before_mb": before, "peak_mb": peak_rss_mb(os.getpid()),
                  "turns": [(t.start, t.end, t.speaker) for t in turns]}))
"""


def cost(specs: list[Spec]) -> Iterator[dict]:
    """Each recording diarized in a fresh process: wall time, and peak memory before and during the call."""
    root = Path(__file__).resolve().parent.parent
    for spec in specs:
        recording = cached(spec)
        output = subprocess.run(
            [sys.executable, "-c", COST_CHILD, str(cache_stem(spec).with_suffix(".wav"))],
            check=True, capture_output=True, text=True, cwd=root,
            env={**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")},
        ).stdout.strip().splitlines()[-1]
        measured = json.loads(output)
        yield _row(spec, recording, [tuple(t) for t in measured["turns"]], measured["seconds"],
                   (measured["before_mb"], measured["peak_mb"]))


def render(rows: list[dict]) -> str:
    lines: list[list[object]] = [[
        r["name"], f"{r['der']:.1%}", f"{r['missed']:.1%}", f"{r['false_alarm']:.1%}", f"{r['confusion']:.1%}",
        f"{r['speakers']} / {r['reference_speakers']}", f"{r['seconds']:.0f}",
    ] for r in rows]
    within = sum(abs(r["speakers"] - r["reference_speakers"]) <= 1 for r in rows)
    lines.append(["**mean**", f"**{np.mean([r['der'] for r in rows]):.1%}**", "", "", "",
                  f"within ±1: {within} of {len(rows)}", ""])
    return table(["recording", "DER", "missed", "false alarm", "confusion", "speakers found / true",
                  "diarization s"], lines)


def render_cost(rows: list[dict]) -> str:
    lines = [[
        r["name"], f"{r['minutes']:.0f}", f"{r['der']:.1%}", f"{r['speakers']} / {r['reference_speakers']}",
        f"{r['seconds']:.0f}", f"{r['seconds'] / (r['minutes'] / 60):.0f}", f"{r['before_mb']:.0f}",
        f"{r['peak_mb']:.0f}", f"{r['peak_mb'] - r['before_mb']:.0f}",
    ] for r in rows]
    return table(["recording", "min", "DER", "speakers found / true", "diarization s", "s per hour of audio",
                  "peak RSS before (MB)", "peak RSS after (MB)", "growth (MB)"], lines)


PARTS = {"dev": (dev_specs, score), "held-out": (held_out_specs, score), "held-out-2": (held_out_2_specs, score),
         "cost": (cost_specs, cost)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(PARTS), action="append", help="run these parts (default: all)")
    parser.add_argument("--write", action="store_true",
                        help="write the section of docs/benchmarks.md from the parts' latest results")
    args = parser.parse_args()
    if not espeak_available():
        sys.exit("espeak-ng and sox are needed (make system-deps)")
    CACHE.mkdir(parents=True, exist_ok=True)
    for part in args.only or ([] if args.write else list(PARTS)):
        specs, runner = PARTS[part]
        rows = []
        for row in runner(specs()):  # saved after each recording: a part cut short still shows what it scored
            rows.append(row)
            (CACHE / f"results-{part}.json").write_text(json.dumps(rows, default=float))
        print(f"\n## {part}\n\n{(render_cost if part == 'cost' else render)(rows)}\n", flush=True)
    if args.write:
        results = {part: json.loads((CACHE / f"results-{part}.json").read_text()) for part in PARTS}
        starred = any(r["name"].endswith(" *") for rows in results.values() for r in rows)
        note = ("\n\nRows marked * were scored by the code just before the VAD ran in 120 s blocks (it changes the speech "
                "regions only near block boundaries); the run with the final code was cut short." if starred else "")
        write_section("diarization-long", "Diarization of long, many-voice recordings (embedded diarizer)",
                      note.lstrip("\n") + "\n" + SECTION.format(dev=render(results["dev"]), held_out=render(results["held-out"]),
                                     held_out_2=render(results["held-out-2"]), cost=render_cost(results["cost"]),
                                     threads=os.environ.get("OPENBLAS_NUM_THREADS", "unset")))


SECTION = """
Recordings assembled by `tests/whisperx_api/meetings.py` from every voice found here: the seven real voices of the
fixtures (two AMI meeting speakers, two telephone speakers, J. F. Kennedy, the English and the German reader of
multilingual.mp3) and espeak-ng voices (each a voice, variant, pitch, speed and sox effects). Each voice has its own
place in a synthetic room and its own level; every utterance is varied (speed ±4 %, spectral tilt, level ±4 dB);
turns are uneven in length and share; about a sixth of the speaker changes overlap by 0.3-1.2 s; the reference is
every utterance's extent. **Easier than a real meeting**: the real voices' material is 7-28 s each, so their
words come back again and again in a long recording; synthetic voices are steadier than people; rooms are
simulated. DER: pyannote.metrics, collar 0.25 s each side of a reference boundary (`collar=0.5`), overlapped
speech scored; no speaker count given. Recordings with up to 120 s of speech go to the spectral clustering tuned on
30 s clips (its own tables are in the WhisperX section above), longer ones to the segment linkage
(`whisperx_api/diarize/agglomerative.py`).

Developed on (the linkage's threshold, minimum share, merge threshold and switch penalty, and the most speakers
estimated by default, were chosen on these):

{dev}

Held out (other seeds, lengths, voice counts and synthetic voices; scored after tuning, never tuned on):

{held_out}

This first held-out set is no longer untouched: it had been scored before the minimum share of a speaker was
lowered from 3 % to 1.5 % of the speech, with two counts outside ±1 (6 / 8 and 7 / 10). The change was chosen on the
dev set alone (its 10-voice recording lost the two voices that speak least), but whoever reads these rows knew
what they had been. So a second held-out set was made after that choice and scored once: other seeds and voice
counts, and six espeak-ng voices that neither set above uses (`HELD_OUT_2_SYNTHETIC` in bench/long_der.py):

{held_out_2}

Longer recordings (held out as well), each diarized in a fresh process reading the recording from a WAV file: wall
time, and the process's peak resident memory (VmHWM) before the call (model loaded, recording decoded) and after
it. The encoder's windows hop 0.25 s up to 5 minutes of speech, then wider (1200 windows), at most 0.75 s, so time grows linearly
with the speech; clustering memory is bounded by the chunk of 2000 segments. Times here were taken with
OPENBLAS_NUM_THREADS={threads}: compare them with each other, not with the throughput tables above. They depend on
what else the machine does: this run had it to itself; the run before (commit b9c709e, the same recordings) shared it
with other work and took 324 s for the 30 minutes and 375 s for the 60.

{cost}
"""


if __name__ == "__main__":
    main()

"""Evaluation audio for the whisperx benchmark, each clip with its reference speaker turns.

- the three fixtures with RTTMs (sample, dev00, dev01), and dev00/dev01 cut differently (halves; both joined:
  one meeting, the same two voices 60 s apart);
- a long recording: sample, dev00 and dev01 repeated with 0.5 s pauses (the same people in every copy, so the
  reference turns stay valid), cut to the length asked for;
- conversations mixed from single-speaker turns of the fixtures (AMI MEE009/MEE012, the two telephone voices,
  JFK) and two espeak-ng voices: 2-4 speakers, random turn order, pauses and overlaps (both voices summed), seeded.

Nothing here was tuned on: the conversations are drawn once from a fixed seed.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.support import FIXTURES

SAMPLE_RATE = 16000
RTTM_OF = {"sample": "sample.rttm", "dev00": "debug.development.rttm", "dev01": "debug.development.rttm"}
ESPEAK_LINES = (
    "we should look at the budget again before the next meeting",
    "I think the design is fine but the remote control is too expensive",
    "can you send me the figures from last quarter please",
    "the users want something simple with fewer buttons",
    "let us agree on the colour and move on to the next point",
)


@dataclass
class Clip:
    name: str
    samples: np.ndarray
    turns: list[tuple[float, float, str]] = field(default_factory=list)  # reference (start, end, speaker)

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def decode(name: str) -> np.ndarray:
    from whisper_common.uploads import decode_audio

    return decode_audio(str(FIXTURES / name)).samples


def rttm_turns(file_id: str) -> list[tuple[float, float, str]]:
    turns = []
    for line in (FIXTURES / RTTM_OF[file_id]).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[1] == file_id:
            start, duration = float(parts[3]), float(parts[4])
            turns.append((start, start + duration, parts[7]))
    return sorted(turns)


def fixture_clip(file_id: str) -> Clip:
    return Clip(file_id, decode(f"{file_id}.wav"), rttm_turns(file_id))


def cut(clip: Clip, start: float, end: float, name: str) -> Clip:
    turns = [(max(s, start) - start, min(e, end) - start, who) for s, e, who in clip.turns if e > start and s < end]
    return Clip(name, clip.samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)], turns)


def join(clips: list[Clip], name: str, pause: float = 0.5, limit: float | None = None) -> Clip:
    pieces, turns, offset = [], [], 0.0
    gap = np.zeros(int(pause * SAMPLE_RATE), dtype=np.float32)
    index = 0
    while True:
        clip = clips[index % len(clips)]
        index += 1
        pieces += [clip.samples, gap]
        turns += [(s + offset, e + offset, who) for s, e, who in clip.turns]
        offset += clip.seconds + pause
        if limit is None and index == len(clips) or limit is not None and offset >= limit:
            break
    joined = Clip(name, np.concatenate(pieces), turns)
    return cut(joined, 0.0, limit, name) if limit is not None else joined


def long_recording(seconds: float) -> Clip:
    return join([fixture_clip(file_id) for file_id in ("sample", "dev00", "dev01")], f"{seconds / 60:g}-minute", limit=seconds)


def recuts() -> list[Clip]:
    dev00, dev01 = fixture_clip("dev00"), fixture_clip("dev01")
    return [
        cut(dev00, 0, 15, "dev00 0-15 s"), cut(dev00, 15, 30, "dev00 15-30 s"),
        cut(dev01, 0, 15, "dev01 0-15 s"), cut(dev01, 15, 30, "dev01 15-30 s"),
        join([dev00, dev01], "dev00 + dev01"),
    ]


def utterances() -> dict[str, list[np.ndarray]]:
    """Per voice, stretches where only that voice speaks (at least 1 s)."""
    voices: dict[str, list[np.ndarray]] = {}
    for file_id in ("sample", "dev00", "dev01"):
        clip = fixture_clip(file_id)
        for start, end, who in clip.turns:
            others = [(s, e) for s, e, w in clip.turns if w != who and e > start and s < end]
            pieces = [(start, end)]
            for s, e in others:  # remove overlapped parts
                pieces = [part for a, b in pieces for part in ((a, min(b, s)), (max(a, e), b)) if part[1] - part[0] > 0]
            for a, b in pieces:
                if b - a >= 1.0:
                    voices.setdefault(who, []).append(clip.samples[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)])
    jfk = decode("jfk.flac")
    voices["JFK"] = [jfk[int(0.3 * SAMPLE_RATE) : int(5.2 * SAMPLE_RATE)], jfk[int(5.2 * SAMPLE_RATE) : int(10.8 * SAMPLE_RATE)]]
    if shutil.which("espeak-ng"):
        for voice in ("en-us+m3", "en-gb+f3"):
            voices[f"espeak {voice}"] = [_espeak(line, voice) for line in ESPEAK_LINES]
    return voices


def _espeak(text: str, voice: str) -> np.ndarray:
    from whisper_common.uploads import decode_audio

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "line.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(path), text], check=True, capture_output=True)
        return decode_audio(str(path)).samples


def conversations(count: int = 6, seed: int = 12) -> list[Clip]:
    """Mixed conversations with known turns: 2-4 speakers, 30-50 s, pauses up to 0.8 s, about a fifth of the
    changes overlapping by 0.3-1.0 s."""
    voices = utterances()
    names = sorted(voices)
    rng = np.random.default_rng(seed)
    clips = []
    for number in range(count):
        speakers = list(rng.choice(names, size=int(rng.integers(2, 5)), replace=False))
        length = float(rng.uniform(30, 50))
        audio = np.zeros(int((length + 15) * SAMPLE_RATE), dtype=np.float32)
        used = {who: 0 for who in speakers}
        turns: list[tuple[float, float, str]] = []
        cursor, previous = 0.3, None
        while cursor < length:
            who = str(rng.choice([s for s in speakers if s != previous]))
            piece = voices[who][used[who] % len(voices[who])]
            used[who] += 1
            if previous is not None and rng.random() < 0.2:
                cursor = max(turns[-1][0] + 0.5, cursor - float(rng.uniform(0.3, 1.0)))  # overlap the last turn
            start = int(cursor * SAMPLE_RATE)
            audio[start : start + len(piece)] += piece
            turns.append((cursor, cursor + len(piece) / SAMPLE_RATE, who))
            cursor = cursor + len(piece) / SAMPLE_RATE + float(rng.uniform(0.1, 0.8))
            previous = who
        end = max(e for _, e, _ in turns) + 0.3
        clips.append(Clip(f"mix {number + 1} ({len(speakers)} voices)", np.clip(audio[: int(end * SAMPLE_RATE)], -1, 1), turns))
    return clips


def write_wav(clip: Clip, folder: Path) -> Path:
    import wave

    path = folder / (clip.name.replace(" ", "_").replace("/", "_") + ".wav")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((np.clip(clip.samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def der(clip: Clip, hypothesis: list[tuple[float, float, str]], collar: float = 0.25) -> dict[str, float]:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, found = Annotation(), Annotation()
    for index, (start, end, who) in enumerate(clip.turns):
        reference[Segment(start, end), index] = who
    for index, (start, end, who) in enumerate(hypothesis):
        found[Segment(start, end), index] = who
    details = DiarizationErrorRate(collar=collar)(reference, found, detailed=True)
    total = details["total"] or 1.0
    return {
        "der": details["diarization error rate"],
        "missed": details["missed detection"] / total,
        "false_alarm": details["false alarm"] / total,
        "confusion": details["confusion"] / total,
        "speakers": len(found.labels()),
        "reference_speakers": len(reference.labels()),
    }

"""Long many-voice recordings with reference turns, assembled from every voice available here.

- **Real voices** (the fixtures): the two AMI speakers (MEE009, MEE012: their solo stretches in dev00/dev01), the two
  telephone speakers of sample.wav (speaker90, speaker91), J. F. Kennedy (jfk.flac), and the two readers of
  multilingual.mp3 (the English and the German paragraph are read by different voices). Their material is short
  (10-30 s each), so a long recording reuses it: each turn is a fresh cut (random offset and length, seeded) of a
  voice's solo speech; the same words come back, which makes long recordings easier than a real meeting of that
  length.
- **Synthetic voices** (espeak-ng, each a voice + variant + pitch + speed, passed through sox effects: pitch shift,
  band limits, reverberation): sentences drawn from a small meeting grammar, so they never run out. A formant
  synthesiser's voices are more alike in their timbre than people are but steadier, and far easier to tell apart
  than two people in one room: results on them are optimistic.

Each voice sits at its own place in the room (a synthetic reverberation drawn per voice and recording: RT60
0.1-0.5 s, direct-to-reverberant 4-14 dB) at its own level (-26 dBFS, -8..+2 dB per voice), and each utterance is
varied as a voice varies between one remark and the next, so repeated material does not give identical embeddings:
speed by up to ±4 %, the spectrum tilted by a random first-order filter, the level by ±4 dB. A faint noise floor
(-70 dBFS) lies under everything.

`meeting(voices, seconds, seed)` interleaves turns of 1-4 utterances with pauses of 0.1-1 s; about a sixth of the
changes overlap the previous turn by 0.3-1.2 s (both voices summed); the speakers' shares are uneven (a Dirichlet
draw, as in meetings where two people do most of the talking). The reference is every utterance's exact extent.
Everything is determined by the seed.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.support import FIXTURES

SAMPLE_RATE = 16000
RTTM_OF = {"sample": "sample.rttm", "dev00": "debug.development.rttm", "dev01": "debug.development.rttm"}
LEVEL_DBFS = -26.0  # an utterance's mean level before its voice's and its own gain
REAL_VOICES = ("MEE009", "MEE012", "speaker90", "speaker91", "JFK", "reader-en", "reader-de")


@dataclass(frozen=True)
class SyntheticVoice:
    """An espeak-ng voice (`voice+variant`, pitch 0-99, words per minute) and a sox effect chain."""

    name: str
    voice: str
    pitch: int
    speed: int
    effects: tuple[str, ...] = ()


# Two disjoint sets: the diarizer is tuned on recordings made of DEV_SYNTHETIC, HELD_OUT_SYNTHETIC is only scored.
DEV_SYNTHETIC = (
    SyntheticVoice("syn-us-m3", "en-us+m3", 40, 165, ("reverb", "20")),
    SyntheticVoice("syn-gb-f3", "en-gb+f3", 55, 150, ("highpass", "300", "lowpass", "3400")),
    SyntheticVoice("syn-sc-m1", "en-gb-scotland+m1", 30, 140, ("pitch", "-150")),
    SyntheticVoice("syn-rp-f1", "en-gb-x-rp+f1", 70, 175, ("reverb", "40")),
    SyntheticVoice("syn-029-m7", "en-029+m7", 45, 155, ()),
    SyntheticVoice("syn-nyc-f5", "en-us-nyc+f5", 60, 160, ("pitch", "120", "reverb", "25")),
)
HELD_OUT_SYNTHETIC = (
    SyntheticVoice("syn-wm-m2", "en-gb-x-gbcwmd+m2", 35, 150, ("reverb", "30")),
    SyntheticVoice("syn-clan-f2", "en-gb-x-gbclan+f2", 65, 165, ("highpass", "200", "lowpass", "3800")),
    SyntheticVoice("syn-us-m6", "en-us+m6", 25, 145, ("pitch", "-100", "reverb", "20")),
    SyntheticVoice("syn-gb-f4", "en-gb+f4", 50, 170, ()),
    SyntheticVoice("syn-us-klatt", "en-us+klatt", 45, 155, ("reverb", "35")),
    SyntheticVoice("syn-rp-m4", "en-gb-x-rp+m4", 55, 160, ("pitch", "150", "lowpass", "5000")),
)

_SUBJECTS = ("we", "the team", "marketing", "I", "our designer", "the client", "everyone", "the board", "you")
_VERBS = ("should look at", "want to change", "already discussed", "could simplify", "need to finish",
          "have to present", "will test", "might drop", "agreed on", "are still missing")
_OBJECTS = ("the budget", "the remote control", "the prototype", "the colour scheme", "the user interface",
            "the battery", "the last quarter figures", "the new logo", "the buttons", "the schedule",
            "the market research", "the production costs")
_TAILS = ("before the next meeting", "by Friday", "if that is all right", "as soon as possible", "for the evaluation",
          "in more detail", "with the engineers", "this afternoon", "again", "and then we can decide")


def sentences(rng: np.random.Generator, count: int) -> list[str]:
    pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
    return [f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_TAILS)}" for _ in range(count)]


def decode(path: Path) -> np.ndarray:
    from whisper_common.uploads import decode_audio

    return decode_audio(str(path)).samples


def _rttm_turns(file_id: str) -> list[tuple[float, float, str]]:
    turns = []
    for line in (FIXTURES / RTTM_OF[file_id]).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[1] == file_id:
            turns.append((float(parts[3]), float(parts[3]) + float(parts[4]), parts[7]))
    return turns


@functools.cache
def real_speech() -> dict[str, tuple[np.ndarray, ...]]:
    """Per real voice, its solo speech (overlapped parts removed) in parts of at least 1 s between pauses."""
    voices: dict[str, list[np.ndarray]] = {}
    for file_id in ("sample", "dev00", "dev01"):
        audio, turns = decode(FIXTURES / f"{file_id}.wav"), _rttm_turns(file_id)
        for start, end, who in turns:
            pieces = [(start, end)]
            for s, e, other in turns:
                if other != who and e > start and s < end:
                    pieces = [p for a, b in pieces for p in ((a, min(b, s)), (max(a, e), b)) if p[1] - p[0] > 0]
            voices.setdefault(who, []).extend(
                audio[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)] for a, b in pieces if b - a >= 1.0
            )
    jfk = decode(FIXTURES / "jfk.flac")
    voices["JFK"] = [jfk[int(0.3 * SAMPLE_RATE) : int(10.8 * SAMPLE_RATE)]]
    readers = decode(FIXTURES / "multilingual.mp3")  # English paragraph to 29.2 s, then German, another reader
    voices["reader-en"] = [readers[int(1.8 * SAMPLE_RATE) : int(29.1 * SAMPLE_RATE)]]
    voices["reader-de"] = [readers[int(31.0 * SAMPLE_RATE) : int(59.8 * SAMPLE_RATE)]]
    return {who: tuple(part for piece in pieces for part in _split_at_pauses(piece)) for who, pieces in voices.items()}


def _split_at_pauses(piece: np.ndarray) -> list[np.ndarray]:
    """The spoken parts of a clean stretch (Silero VAD, pauses of 0.4 s or more), so reference turns hold no long
    pause; parts shorter than 1 s are dropped."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=0.5, min_silence_duration_ms=400, speech_pad_ms=30, min_speech_duration_ms=250)
    parts = [piece[chunk["start"] : chunk["end"]] for chunk in get_speech_timestamps(piece, options)]
    return [part for part in parts if len(part) >= SAMPLE_RATE]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def synthesize(voice: SyntheticVoice, text: str) -> np.ndarray:
    """One utterance of `voice` (16 kHz mono float32), leading and trailing silence trimmed."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "out.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice.voice, "-p", str(voice.pitch), "-s", str(voice.speed), "-w", str(raw), text],
            check=True, capture_output=True,
        )
        subprocess.run(
            ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", str(out), *voice.effects,
             "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%", "reverse"],
            check=True, capture_output=True,
        )
        return decode(out)


@dataclass
class Recording:
    name: str
    samples: np.ndarray
    turns: list[tuple[float, float, str]]  # reference (start, end, speaker)

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def speakers(self) -> int:
        return len({who for _, _, who in self.turns})


class VoicePool:
    """Utterances on demand: fresh cuts of a real voice's speech, or new sentences of a synthetic one."""

    def __init__(self, rng: np.random.Generator, synthetic: tuple[SyntheticVoice, ...]) -> None:
        self.rng = rng
        self.synthetic = {voice.name: voice for voice in synthetic}
        self._rooms: dict[str, np.ndarray] = {}

    def utterance(self, who: str) -> np.ndarray:
        rng = self.rng
        if who in self.synthetic:
            return synthesize(self.synthetic[who], sentences(rng, 1)[0])
        stretches = real_speech()[who]
        stretch = stretches[int(rng.integers(len(stretches)))]
        length = min(len(stretch), int(rng.uniform(1.5, 6.0) * SAMPLE_RATE))
        start = int(rng.integers(0, len(stretch) - length + 1))
        return stretch[start : start + length]

    def room(self, key: str) -> np.ndarray:
        """The impulse response of `key`'s place in the room (drawn once per key): a synthetic reverberation tail,
        RT60 0.1-0.5 s, direct-to-reverberant ratio 4-14 dB (a microphone on the table, not across the hall)."""
        if key not in self._rooms:
            rng = self.rng
            decay = float(rng.uniform(0.1, 0.5))
            t = np.arange(int(decay * SAMPLE_RATE)) / SAMPLE_RATE
            tail = rng.normal(size=len(t)) * np.exp(-6.9 * t / decay)
            room = tail * np.sqrt(10 ** (-float(rng.uniform(4, 14)) / 10) / np.sum(tail**2))
            room[0] = 1.0
            self._rooms[key] = room
        return self._rooms[key]

    def vary(self, piece: np.ndarray, room: str) -> np.ndarray:
        """An utterance as said this time, from the place `room` (see the module docstring)."""
        from scipy.signal import fftconvolve, lfilter, resample_poly

        rng = self.rng
        speed = int(round(100 * rng.uniform(0.96, 1.04)))
        piece = resample_poly(piece, 100, speed).astype(np.float32)
        tilt = float(rng.uniform(-0.3, 0.3))
        piece = lfilter([1.0, -tilt], [1.0], piece) / (1 + abs(tilt))
        piece = fftconvolve(piece, self.room(room))[: len(piece)]
        level = 10 ** ((LEVEL_DBFS + rng.uniform(-4, 4)) / 20) / max(float(np.sqrt(np.mean(np.square(piece)))), 1e-6)
        return (piece * level).astype(np.float32)


def meeting(
    voices: list[str], seconds: float, seed: int, synthetic: tuple[SyntheticVoice, ...] = (), name: str = "",
    overlap_share: float = 1 / 6,
) -> Recording:
    """`seconds` of conversation among `voices` (names from REAL_VOICES or `synthetic`), with its reference."""
    rng = np.random.default_rng(seed)
    pool = VoicePool(rng, synthetic)
    shares = rng.dirichlet(np.full(len(voices), 1.5)) * 0.8 + 0.2 / len(voices)
    gains = {who: float(10 ** (rng.uniform(-8, 2) / 20)) for who in voices}
    pieces: list[tuple[int, np.ndarray]] = []
    turns: list[tuple[float, float, str]] = []
    cursor, previous = 0.5, None
    while cursor < seconds:
        choices = [i for i, who in enumerate(voices) if who != previous] or [0]
        weights = shares[choices] / shares[choices].sum()
        who = voices[choices[int(rng.choice(len(choices), p=weights))]]
        if previous is not None and rng.random() < overlap_share:
            cursor = max(turns[-1][0] + 0.5, turns[-1][1] - float(rng.uniform(0.3, 1.2)))
        for _ in range(int(rng.integers(1, 5))):
            piece = pool.vary(pool.utterance(who), room=who) * gains[who]
            pieces.append((int(cursor * SAMPLE_RATE), piece))
            turns.append((cursor, cursor + len(piece) / SAMPLE_RATE, who))
            cursor += len(piece) / SAMPLE_RATE + float(rng.uniform(0.1, 0.4))
        cursor += float(rng.uniform(0.1, 0.8))
        previous = who
    audio = np.zeros(int((cursor + 1.0) * SAMPLE_RATE), dtype=np.float32)
    for start, piece in pieces:
        audio[start : start + len(piece)] += piece
    audio += rng.normal(0, 10 ** (-70 / 20), len(audio)).astype(np.float32)
    label = name or f"{len(voices)} voices, {seconds / 60:g} min, seed {seed}"
    return Recording(label, np.clip(audio, -1, 1), sorted(turns))


def der(recording: Recording, hypothesis: list[tuple[float, float, str]], collar: float = 0.25) -> dict[str, float]:
    """DER with pyannote.metrics, overlap scored. pyannote's `collar` is the whole width around each reference
    boundary, so a collar of 0.25 s each side is DiarizationErrorRate(collar=0.5)."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, found = Annotation(), Annotation()
    for index, (start, end, who) in enumerate(recording.turns):
        reference[Segment(start, end), index] = who
    for index, (start, end, who) in enumerate(hypothesis):
        found[Segment(start, end), index] = who
    details = DiarizationErrorRate(collar=2 * collar, skip_overlap=False)(reference, found, detailed=True)
    total = details["total"] or 1.0
    return {
        "der": details["diarization error rate"],
        "missed": details["missed detection"] / total,
        "false_alarm": details["false alarm"] / total,
        "confusion": details["confusion"] / total,
        "speakers": len(found.labels()),
        "reference_speakers": len(reference.labels()),
    }

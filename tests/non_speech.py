"""Audio without speech, made here with sox (and espeak-ng for speech-shaped noise), for the tests and the benchmark of
the speech guard (issue 22): silence, white/pink/brown noise at three levels, mains hum, tones, synthetic music, clicks,
a telephone line's hiss and speech-shaped noise.

    clips = write_corpus(folder, seconds=8.0, part=TUNING)      # {name: path} of 16 kHz mono 16-bit WAVs

Two parts: `TUNING` (the one the guard's choices were measured on) and `HELD_BACK` (other seeds, levels, frequencies and
melodies), which nothing was tuned on; results on it are reported apart. sox runs in repeatable mode (`-R`): a noise's
"seed" is where it is cut from a longer repeatable stream, so every run writes the same files.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
TUNING = "tuning"
HELD_BACK = "held-back"
SPEECH_LINES = (
    "the committee will meet again on thursday to review the budget and the plans for next year",
    "please remember to bring the signed forms and your identity card when you come to the office",
)


def tools_available() -> bool:
    return shutil.which("sox") is not None and shutil.which("espeak-ng") is not None


@dataclass(frozen=True)
class NonSpeech:
    name: str
    kind: str
    """silence, white, pink, brown, hum, tone, music, clicks, telephone, speech-shaped"""
    part: str
    write: Callable[[Path, float], None]


def _sox(path: Path, seconds: float, *effects: str, seed: int = 0) -> None:
    """`sox -n` with `effects`, from `seed` seconds into the repeatable stream, cut to `seconds`."""
    subprocess.run(
        ["sox", "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "synth", f"{seconds + seed:g}",
         *effects, "trim", f"{seed:g}", f"{seconds:g}"],
        check=True, capture_output=True,
    )


def _sox_at_level(path: Path, seconds: float, level_db: float, *effects: str, seed: int = 0) -> np.ndarray:
    """What `_sox` makes, scaled to an RMS of `level_db` dBFS (and written to `path`)."""
    _sox(path, seconds, *effects, seed=seed)
    samples = _at_level(_read(path), level_db)
    _write(path, samples)
    return samples


def _noise(colour: str, level_db: float, seed: int) -> Callable[[Path, float], None]:
    """Noise whose RMS is `level_db` dBFS."""
    return lambda path, seconds: _sox_at_level(path, seconds, level_db, f"{colour}noise", seed=seed)


def _hum(frequency: float, level_db: float, harmonics: bool = True) -> Callable[[Path, float], None]:
    """Mains hum: the fundamental and (`harmonics`) its odd harmonics, as a transformer or a ground loop makes it."""
    partials = ((1, 1.0), (3, 0.4), (5, 0.2), (7, 0.1)) if harmonics else ((1, 1.0),)

    def write(path: Path, seconds: float) -> None:
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        hum = sum(amplitude * np.sin(2 * np.pi * frequency * k * t) for k, amplitude in partials)
        _write(path, _at_level(hum, level_db))

    return write


def _tones(*effects: str) -> Callable[[Path, float], None]:
    return lambda path, seconds: _sox(path, seconds, *effects)


def _plucked(notes: tuple[str, ...], note_seconds: float, level_db: float) -> Callable[[Path, float], None]:
    """A melody of plucked-string notes (sox `pluck`), repeated to the length asked."""

    def write(path: Path, seconds: float) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            parts = []
            for index, note in enumerate(notes):
                part = Path(tmp) / f"{index}.wav"
                subprocess.run(["sox", "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(part), "synth",
                                f"{note_seconds:g}", "pluck", note], check=True, capture_output=True)
                parts.append(_read(part))
            melody = np.concatenate(parts)
            repeats = int(np.ceil(seconds * SAMPLE_RATE / len(melody)))
            _write(path, _at_level(np.tile(melody, repeats)[: int(seconds * SAMPLE_RATE)], level_db))

    return write


def _chords(level_db: float) -> Callable[[Path, float], None]:
    """Sustained synthesizer chords (three sawtooth voices, a low-pass), changing every 2 s."""

    def write(path: Path, seconds: float) -> None:
        t = np.arange(int(2.0 * SAMPLE_RATE)) / SAMPLE_RATE
        chords = ((220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (164.8, 207.7, 246.9))
        bars = [sum(2 * ((f * t) % 1.0) - 1 for f in chord) * np.minimum(1.0, t * 20) * np.minimum(1.0, (2.0 - t) * 20)
                for chord in chords]
        music = np.tile(np.concatenate(bars), int(np.ceil(seconds / (2.0 * len(chords)))))[: int(seconds * SAMPLE_RATE)]
        smoothed = np.convolve(music, np.ones(8) / 8, mode="same")
        _write(path, _at_level(smoothed, level_db))

    return write


def _clicks(rate_per_second: float, level_db: float, seed: int) -> Callable[[Path, float], None]:
    """Clicks at random moments (a crackling cable, a vinyl record's dust), each a decaying 2 ms burst."""

    def write(path: Path, seconds: float) -> None:
        rng = np.random.default_rng(seed)
        audio = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float64)
        burst = rng.standard_normal(32) * np.exp(-np.arange(32) / 6)
        for at in rng.uniform(0, seconds - 0.01, size=int(rate_per_second * seconds)):
            start = int(at * SAMPLE_RATE)
            audio[start:start + 32] += burst * rng.uniform(0.3, 1.0)
        peak = 10 ** (level_db / 20)
        _write(path, audio / np.abs(audio).max() * peak)

    return write


def _telephone(level_db: float, seed: int) -> Callable[[Path, float], None]:
    """A telephone line with nobody speaking: band-limited (300-3400 Hz) hiss and a hum 20 dB below it."""

    def write(path: Path, seconds: float) -> None:
        hiss = _sox_at_level(path, seconds, level_db, "whitenoise", "sinc", "300-3400", seed=seed)
        t = np.arange(len(hiss)) / SAMPLE_RATE
        _write(path, hiss + _at_level(np.sin(2 * np.pi * 50 * t), level_db - 20))

    return write


def _speech_shaped(line: str, voice: str, level_db: float, seed: int) -> Callable[[Path, float], None]:
    """Noise with speech's long-term spectrum: espeak-ng speech whose phases are randomised (no words left)."""

    def write(path: Path, seconds: float) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "line.wav"
            resampled = Path(tmp) / "line16.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), line], check=True, capture_output=True)
            subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(resampled)], check=True,
                           capture_output=True)
            speech = _read(resampled)
        length = int(seconds * SAMPLE_RATE)
        speech = np.tile(speech, int(np.ceil(length / len(speech))))[:length]
        spectrum = np.fft.rfft(speech)
        phases = np.exp(2j * np.pi * np.random.default_rng(seed).uniform(size=spectrum.shape))
        _write(path, _at_level(np.fft.irfft(np.abs(spectrum) * phases, n=length), level_db))

    return write


def corpus(part: str | None = None) -> list[NonSpeech]:
    """The clips of `part` (TUNING or HELD_BACK), or all of them."""
    clips = [
        NonSpeech("digital silence", "silence", TUNING, lambda path, seconds: _sox(path, seconds, "sine", "0", "vol", "0")),
        *(NonSpeech(f"{colour} noise {level} dBFS", colour, TUNING, _noise(colour, level, seed=1))
          for colour in ("white", "pink", "brown") for level in (-50, -35, -20)),
        NonSpeech("50 Hz hum", "hum", TUNING, _hum(50.0, -40, harmonics=False)),
        NonSpeech("1 kHz tone", "tone", TUNING, _tones("sine", "1000", "vol", "0.3")),
        NonSpeech("synthetic plucked notes", "music", TUNING,
                  _plucked(("C4", "E4", "G4", "C5", "G4", "E4", "D4", "F4"), 0.4, -25)),
        NonSpeech("clicks", "clicks", TUNING, _clicks(4.0, -10, seed=1)),
        NonSpeech("telephone line hiss", "telephone", TUNING, _telephone(-38, seed=1)),
        NonSpeech("speech-shaped noise", "speech-shaped", TUNING, _speech_shaped(SPEECH_LINES[0], "en-us", -22, seed=1)),
        # Held back: nothing was tuned on these.
        NonSpeech("near-silence (dither)", "silence", HELD_BACK,
                  lambda path, seconds: _sox(path, seconds, "whitenoise", "vol", "0.0002", seed=7)),
        *(NonSpeech(f"{colour} noise {level} dBFS (held back)", colour, HELD_BACK, _noise(colour, level, seed=11))
          for colour in ("white", "pink", "brown") for level in (-44, -28, -16)),
        NonSpeech("60 Hz hum", "hum", HELD_BACK, _hum(60.0, -18)),
        NonSpeech("dial tone 350+440 Hz", "tone", HELD_BACK, _tones("sine", "350", "sine", "440", "vol", "0.2")),
        NonSpeech("tone sweep 200-3000 Hz", "tone", HELD_BACK, _tones("sine", "200-3000", "vol", "0.2")),
        NonSpeech("plucked arpeggio", "music", HELD_BACK,
                  _plucked(("A3", "C4", "E4", "A4", "F3", "A3", "C4", "F4", "G3", "B3", "D4", "G4"), 0.25, -14)),
        NonSpeech("synthesizer chords", "music", HELD_BACK, _chords(-20)),
        NonSpeech("crackle", "clicks", HELD_BACK, _clicks(15.0, -16, seed=5)),
        NonSpeech("telephone line hiss (held back)", "telephone", HELD_BACK, _telephone(-30, seed=9)),
        NonSpeech("speech-shaped noise (held back)", "speech-shaped", HELD_BACK,
                  _speech_shaped(SPEECH_LINES[1], "en-gb+f3", -16, seed=3)),
    ]
    return [clip for clip in clips if part is None or clip.part == part]


def write_corpus(folder: Path, seconds: float, part: str | None = None) -> dict[str, Path]:
    """Write the clips of `part` into `folder`; {name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for index, clip in enumerate(corpus(part)):
        path = folder / f"{clip.part}-{index:02d}-{clip.kind}.wav"
        clip.write(path, seconds)
        paths[clip.name] = path
    return paths


def _at_level(samples: np.ndarray, level_db: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(samples)))) or 1.0
    return np.clip(samples / rms * 10 ** (level_db / 20), -1.0, 1.0)


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.float64) / 32768


def _write(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(pcm.tobytes())

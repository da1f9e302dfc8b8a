"""Enrolment clips: a file part or a data URL (`data:audio/wav;base64,...`) decoded to 16 kHz mono, checked, and cut
to its speech (Silero VAD, as the speech gate finds it). Every problem is a 400 naming the field and the clip:

- not audio (or a data URL that is not one, or not base64);
- too short (under `MIN_CLIP_SECONDS`), too long (over SPEAKERS__MAX_CLIP_SECONDS);
- no speech, or too little of it (under SPEAKERS__MIN_SPEECH_SECONDS: the encoder reads 1.6 s windows, and a clip
  of noise would still give a vector that matches someone).

    clip = enrolment_clip(part, field="file", index=0, limits=ClipLimits(60, 2.0))
    clip.speech          # the speech, joined (what is embedded)
    clip.seconds, clip.speech_seconds
"""
from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile as FilePart

from whisper_common.errors import ApiError, InvalidParameter
from whisper_common.speech_gate import WINDOW, GateOptions, speech_probabilities, speech_regions
from whisper_common.uploads import SAMPLE_RATE, decode_audio

MIN_CLIP_SECONDS = 1.0
SPEECH_GATE = GateOptions(threshold=0.5, min_silence_ms=300, speech_pad_ms=100)
"""Tighter than the transcription gate's: a pause of 0.3 s ends a region, and little silence is kept around it (the
d-vector of silence is nobody's voice)."""


@dataclass(frozen=True)
class ClipLimits:
    max_seconds: float = 60.0
    min_speech_seconds: float = 1.5


@dataclass(frozen=True)
class EnrolmentClip:
    samples: np.ndarray
    """The whole clip, 16 kHz mono float32 (kept only when the operator keeps audio)."""
    speech: np.ndarray
    """Its speech regions joined: what the encoder embeds."""
    speech_seconds: float

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def enrolment_clip(source: Any, *, field: str, index: int, limits: ClipLimits) -> EnrolmentClip:
    """One clip, decoded and checked (blocking: call it in a worker thread)."""
    which = f"{field} clip {index + 1}"
    if isinstance(source, FilePart):
        source.file.seek(0)
        readable: Any = source.file
    elif isinstance(source, (bytes, bytearray)):
        readable = io.BytesIO(source)
    else:
        readable = io.BytesIO(data_url_bytes(str(source), field, which))
    try:
        audio = decode_audio(readable, max_seconds=limits.max_seconds)
    except ApiError as exc:
        if exc.code == "audio_too_long":
            raise InvalidParameter(field, f"{which} is too long: {exc.message}; a clip may last at most "
                                   f"{limits.max_seconds:g} s") from None
        raise InvalidParameter(field, f"{which} is not usable audio: {exc.message}") from None
    if audio.duration < MIN_CLIP_SECONDS:
        raise InvalidParameter(field, f"{which} is too short: {audio.duration:.2f} s; a clip must last at least "
                               f"{MIN_CLIP_SECONDS:g} s and hold {limits.min_speech_seconds:g} s of speech")
    samples = np.asarray(audio.samples, dtype=np.float32)
    probabilities = speech_probabilities(samples)
    voiced = float(np.count_nonzero(probabilities >= SPEECH_GATE.threshold)) * WINDOW / SAMPLE_RATE
    if voiced < 0.3:
        raise InvalidParameter(field, f"{which} holds no speech (the voice activity detector heard none in its "
                               f"{audio.duration:.1f} s)")
    if voiced < limits.min_speech_seconds:
        raise InvalidParameter(field, f"{which} is too short: it holds {voiced:.1f} s of speech; a clip needs at "
                               f"least {limits.min_speech_seconds:g} s")
    regions = speech_regions(samples, SPEECH_GATE, probabilities)
    speech = np.concatenate([samples[region["start"] : region["end"]] for region in regions])
    return EnrolmentClip(samples, speech, voiced)


def data_url_bytes(value: str, field: str, which: str) -> bytes:
    header, comma, payload = value.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidParameter(field, f"{which} must be a file or a data URL like 'data:audio/wav;base64,...'")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(field, f"{which} is not valid base64") from None


def pcm16(samples: np.ndarray) -> bytes:
    """A clip as kept when SPEAKERS__KEEP_AUDIO is on: 16 kHz mono 16-bit little-endian PCM."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()

"""The voices a request names speakers with: `known_speaker_names[]` and `known_speaker_references[]` (OpenAI's
`gpt-4o-transcribe-diarize` fields, whisperx_api.options.KnownSpeakerFields), one name per reference clip, each clip a
file part or a data URL (`data:audio/wav;base64,...`, as OpenAI's SDK sends them), 2-10 s of one voice; and
`speakers` (the caller's voiceprints: `library` or names, whisper_common.speakers).

Every problem is a 400 naming the field; the clips are decoded and the voiceprints read here, so a bad one fails
before any decoding work.
"""
from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as FilePart
from starlette.requests import Request

from whisper_common.errors import ApiError, InvalidParameter
from whisper_common.owners import owner_of
from whisper_common.speakers.library import SpeakerLibrary
from whisper_common.uploads import decode_audio
from whisperx_api.diarize.known import (
    MAX_KNOWN_SPEAKERS,
    MAX_REFERENCE_SECONDS,
    MIN_REFERENCE_SECONDS,
    KnownSpeaker,
    KnownVoices,
)
from whisperx_api.options import NAMES, REFERENCES, KnownSpeakerFields, WhisperXOptions

_MAX_NAME_LENGTH = 64


STALE_HEADER = "X-Speakers-Stale"
"""Names the caller's voiceprints that `speakers=library` skipped: made by another embedding model than the running
one (re-enrol them: POST /v1/speakers/{id}/samples)."""


async def known_voices(
    request: Request, form: KnownSpeakerFields, options: WhisperXOptions
) -> tuple[KnownVoices, dict[str, str]]:
    """The request's clips and voiceprints; and the headers that report stale voiceprints skipped."""
    clips = await known_speakers(form, options.diarize)
    selection = options.selection
    if selection is None:
        return KnownVoices(clips), {}
    library: SpeakerLibrary = request.app.state.speakers
    references, stale = await library.references(owner_of(request).name, selection)
    return KnownVoices(clips, tuple(references)), ({STALE_HEADER: ",".join(stale)} if stale else {})


async def known_speakers(form: KnownSpeakerFields, diarize: bool | None) -> tuple[KnownSpeaker, ...]:
    names, references = form.known_speaker_names or [], form.known_speaker_references or []
    if not names and not references:
        return ()
    checked = check_names(names, len(references))
    known = tuple([
        KnownSpeaker(name, await run_in_threadpool(reference_samples, reference, index, name))
        for index, (name, reference) in enumerate(zip(checked, references))
    ])
    if diarize is False:
        raise InvalidParameter(NAMES, f"{NAMES} names diarized speakers: it cannot be used with diarize=false")
    return known


def check_names(names: list[Any], reference_count: int) -> list[str]:
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise InvalidParameter(NAMES, f"{NAMES} has {len(names)} names; at most {MAX_KNOWN_SPEAKERS} known speakers are supported")
    if len(names) > reference_count:
        raise InvalidParameter(
            NAMES, f"{NAMES} has {len(names)} names but {REFERENCES} has {reference_count} clips: give one clip per name"
        )
    if len(names) < reference_count:
        raise InvalidParameter(
            REFERENCES, f"{REFERENCES} has {reference_count} clips but {NAMES} has {len(names)} names: give one name per clip"
        )
    checked: list[str] = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise InvalidParameter(NAMES, f"every entry of {NAMES} must be a non-empty name")
        name = name.strip()
        if len(name) > _MAX_NAME_LENGTH:
            raise InvalidParameter(NAMES, f"the name '{name[:20]}...' in {NAMES} is longer than {_MAX_NAME_LENGTH} characters")
        if name in checked:
            raise InvalidParameter(NAMES, f"the name '{name}' appears twice in {NAMES}: names must be distinct")
        checked.append(name)
    return checked


SILENT_RMS = 1e-3
"""Below this RMS (about -60 dBFS) a clip holds no voice; the speaker encoder would turn it into NaNs."""


def reference_samples(reference: Any, index: int, name: str):  # -> np.ndarray
    """A clip as 16 kHz mono samples; not audio, a bad data URL, under 2 s or over 10 s is a 400."""
    which = f"{REFERENCES} clip {index + 1} (for '{name}')"
    if isinstance(reference, FilePart):
        reference.file.seek(0)
        source = reference.file
    else:
        source = io.BytesIO(data_url_bytes(str(reference), which))
    try:
        audio = decode_audio(source, max_seconds=MAX_REFERENCE_SECONDS + 5)
    except ApiError as exc:
        raise InvalidParameter(REFERENCES, f"{which} is not usable audio: {exc.message}") from None
    if not MIN_REFERENCE_SECONDS <= audio.duration <= MAX_REFERENCE_SECONDS:
        raise InvalidParameter(
            REFERENCES,
            f"{which} lasts {audio.duration:.1f} s; a reference clip must last "
            f"{MIN_REFERENCE_SECONDS:g}-{MAX_REFERENCE_SECONDS:g} s",
        )
    if float(np.sqrt(np.mean(np.square(audio.samples, dtype=np.float64)))) < SILENT_RMS:
        raise InvalidParameter(REFERENCES, f"{which} is silent: a reference clip must hold the speaker's voice")
    return audio.samples


def data_url_bytes(value: str, which: str) -> bytes:
    header, comma, payload = value.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidParameter(REFERENCES, f"{which} must be a file or a data URL like 'data:audio/wav;base64,...'")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(REFERENCES, f"{which} is not valid base64") from None
